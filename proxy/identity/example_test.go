package identity_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"

	"github.com/onbehalf-dev/onbehalf/proxy/identity"
)

// Example mints an assertion the way an orchestrator does and verifies it
// the way the sidecar does.
func Example() {
	// The orchestrator's key pair; the sidecar gets the public half.
	priv, pubPEM, err := identity.GenerateKeyPair("EdDSA")
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "identity-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	pubFile := filepath.Join(dir, "orchestrator.pub.pem")
	if err := os.WriteFile(pubFile, pubPEM, 0o644); err != nil {
		log.Fatal(err)
	}

	cfg := identity.DefaultConfig()
	cfg.Audience = "agent-7"
	cfg.Issuers = []string{"https://orchestrator.example"}
	cfg.Keys = []identity.KeyConfig{{ID: "orch-1", File: pubFile}}
	v, err := identity.New(context.Background(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()

	// Orchestrator: alice's task, run by agent-7, limited to Slack.
	raw, err := identity.Mint(priv, identity.MintOptions{
		Issuer: "https://orchestrator.example", Audience: "agent-7",
		Subject: "alice", Agent: "agent-7", KeyID: "orch-1",
		Claims: map[string]any{"providers": []string{"slack"}},
	})
	if err != nil {
		log.Fatal(err)
	}

	// Sidecar: take the one assertion from the request and verify it.
	req, _ := http.NewRequest(http.MethodGet, "https://slack.com/api/auth.test", nil)
	req.Header.Set(v.Header(), raw)
	tok, err := identity.FromHeader(req.Header, v.Header())
	if err != nil {
		log.Fatal(err)
	}
	sub, err := v.Verify(context.Background(), tok)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(sub.User, sub.Agent, sub.Claims["providers"])

	// An assertion minted for another sidecar is refused.
	other, _ := identity.Mint(priv, identity.MintOptions{
		Issuer: "https://orchestrator.example", Audience: "agent-8", Subject: "alice", KeyID: "orch-1",
	})
	_, err = v.Verify(context.Background(), other)
	fmt.Println(errors.Is(err, identity.ErrInvalid), err)
	// Output:
	// alice agent-7 [slack]
	// true invalid assertion: audience mismatch
}
