package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

func newAssertCmd() *cobra.Command {
	var (
		keyPath, iss, aud, sub, act, kid string
		ttl                              time.Duration
		claims                           []string
	)
	cmd := &cobra.Command{
		Use:   "assert --key FILE --iss ISSUER --aud AUDIENCE --sub USER [--act AGENT]",
		Short: "Mint a signed assertion naming the user an agent acts for",
		Long: `Mint the short-lived signed assertion (JWT) that tells the sidecar which human an agent
acts for. Orchestrators without a JWT library can call this; tests and demos use it too.

Narrowing claims are added with --claim name=value (repeatable); a value holding commas
becomes a list: --claim providers=slack,github --claim task_id=t-42.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyPath == "" || iss == "" || aud == "" || sub == "" {
				return usageError{errors.New("--key, --iss, --aud and --sub are required")}
			}
			// The sidecar looks the user's grant up by this id: one the
			// store refuses would only fail later, on every request.
			if err := store.ValidateUser(sub); err != nil {
				return usageError{fmt.Errorf("--sub: %w; grants are stored under the user id, so it must be one the store accepts", err)}
			}
			key, alg, err := identity.LoadSigningKey(keyPath)
			if err != nil {
				return err
			}
			extra, err := parseClaims(claims)
			if err != nil {
				return usageError{err}
			}
			tok, err := identity.Mint(key, identity.MintOptions{
				Issuer: iss, Audience: aud, Subject: sub, Agent: act, KeyID: kid,
				TTL: ttl, Claims: extra, Algorithm: alg,
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "", "signing key: PEM private key (Ed25519, ECDSA, RSA) or HS256 secret file")
	cmd.Flags().StringVar(&iss, "iss", "", "issuer (must be one the sidecar accepts)")
	cmd.Flags().StringVar(&aud, "aud", "", "audience (the sidecar's identity.audience)")
	cmd.Flags().StringVar(&sub, "sub", "", "the user the agent acts for")
	cmd.Flags().StringVar(&act, "act", "", "the agent's id (act.sub)")
	cmd.Flags().StringVar(&kid, "kid", "", "key id header")
	cmd.Flags().DurationVar(&ttl, "ttl", 5*time.Minute, "lifetime")
	cmd.Flags().StringArrayVar(&claims, "claim", nil, "extra claim name=value (repeatable)")

	var alg, privPath, pubPath string
	keygen := &cobra.Command{
		Use:   "keygen --private FILE --public FILE",
		Short: "Create a signing key pair for assertions",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if privPath == "" || pubPath == "" {
				return usageError{errors.New("--private and --public are required")}
			}
			for _, p := range []string{privPath, pubPath} {
				if _, err := os.Stat(p); err == nil {
					return fmt.Errorf("%s exists; not overwriting", p)
				}
			}
			priv, pubPEM, err := identity.GenerateKeyPair(alg)
			if err != nil {
				return err
			}
			privPEM, err := marshalPrivateKey(priv)
			if err != nil {
				return err
			}
			if err := os.WriteFile(privPath, privPEM, 0o600); err != nil {
				return err
			}
			if err := os.WriteFile(pubPath, pubPEM, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s private key %s and public key %s\n", alg, privPath, pubPath)
			return nil
		},
	}
	keygen.Flags().StringVar(&alg, "alg", "EdDSA", "algorithm: EdDSA or ES256")
	keygen.Flags().StringVar(&privPath, "private", "", "private key output (mode 0600)")
	keygen.Flags().StringVar(&pubPath, "public", "", "public key output")
	cmd.AddCommand(keygen)
	return cmd
}

func parseClaims(kvs []string) (map[string]any, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]any{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--claim %q: want name=value", kv)
		}
		switch k {
		case "iss", "aud", "sub", "exp", "iat", "nbf", "jti", "act":
			return nil, fmt.Errorf("--claim %s: set registered claims with their own flags", k)
		}
		if strings.Contains(v, ",") {
			var list []any
			for x := range strings.SplitSeq(v, ",") {
				list = append(list, strings.TrimSpace(x))
			}
			out[k] = list
			continue
		}
		out[k] = v
	}
	return out, nil
}

// marshalPrivateKey encodes a private key as PKCS#8 PEM.
func marshalPrivateKey(key any) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
