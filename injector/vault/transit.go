package vault

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// ciphertextPrefix starts every Transit ciphertext ("vault:v1:…").
const ciphertextPrefix = "vault:v"

// transit envelopes token fields with a derived Transit key. Each field's
// derivation context names its provider, user and field, so a ciphertext
// copied to another grant (or swapped between the access and refresh
// fields) does not decrypt.
type transit struct {
	mount, key string
}

// tokenContext is the base64 derivation context of one token field.
func tokenContext(provider, user, field string) string {
	return base64.StdEncoding.EncodeToString([]byte(provider + "/" + user + "/" + field))
}

// sealedField is one token field to encrypt or decrypt.
type sealedField struct {
	field string // access_token or refresh_token
	value string // plaintext or ciphertext
}

// batchItem is one entry of a Transit batch request or response.
type batchItem struct {
	Plaintext  string `json:"plaintext,omitempty"`
	Ciphertext string `json:"ciphertext,omitempty"`
	Context    string `json:"context,omitempty"`
	Error      string `json:"error,omitempty"`
}

// batchResponse is a Transit batch answer.
type batchResponse struct {
	Data struct {
		BatchResults []batchItem `json:"batch_results"`
	} `json:"data"`
}

// encrypt returns the ciphertexts of fields, in order, in one batch call.
// Empty values stay empty (nothing to hide, and Transit refuses them).
func (t *transit) encrypt(ctx context.Context, c *conn, provider, user string, fields []sealedField) ([]string, error) {
	out := make([]string, len(fields))
	var items []batchItem
	var idx []int
	for i, f := range fields {
		if f.value == "" {
			continue
		}
		items = append(items, batchItem{
			Plaintext: base64.StdEncoding.EncodeToString([]byte(f.value)),
			Context:   tokenContext(provider, user, f.field),
		})
		idx = append(idx, i)
	}
	if len(items) == 0 {
		return out, nil
	}
	var resp batchResponse
	if _, err := c.call(ctx, http.MethodPut, t.mount+"/encrypt/"+t.key, map[string]any{"batch_input": items}, &resp); err != nil {
		return nil, fmt.Errorf("transit encrypt: %w", unexpected(err))
	}
	if len(resp.Data.BatchResults) != len(items) {
		return nil, fmt.Errorf("transit encrypt: %w: %d results for %d inputs", store.ErrUnavailable, len(resp.Data.BatchResults), len(items))
	}
	for j, r := range resp.Data.BatchResults {
		if r.Error != "" || !strings.HasPrefix(r.Ciphertext, ciphertextPrefix) {
			return nil, fmt.Errorf("transit encrypt %s: %w: %s", fields[idx[j]].field, store.ErrUnavailable, r.Error)
		}
		out[idx[j]] = r.Ciphertext
	}
	return out, nil
}

// decrypt returns the plaintexts of fields, in order, in one batch call. A
// value that is not a Transit ciphertext, or that does not decrypt under
// its context, yields ErrDecrypt; the stored entry is not touched.
func (t *transit) decrypt(ctx context.Context, c *conn, provider, user string, fields []sealedField) ([]string, error) {
	out := make([]string, len(fields))
	var items []batchItem
	var idx []int
	for i, f := range fields {
		if f.value == "" {
			continue
		}
		if !strings.HasPrefix(f.value, ciphertextPrefix) {
			return nil, fmt.Errorf("%s: %w: not a transit ciphertext", f.field, store.ErrDecrypt)
		}
		items = append(items, batchItem{Ciphertext: f.value, Context: tokenContext(provider, user, f.field)})
		idx = append(idx, i)
	}
	if len(items) == 0 {
		return out, nil
	}
	var resp batchResponse
	status, err := c.call(ctx, http.MethodPut, t.mount+"/decrypt/"+t.key, map[string]any{"batch_input": items}, &resp)
	if err != nil {
		var se *statusError
		// Transit answers 400 when an item fails to decrypt (wrong
		// context, tampered ciphertext); the body still lists per-item
		// errors.
		if status == http.StatusBadRequest && errors.As(err, &se) {
			return nil, fmt.Errorf("transit decrypt: %w: %s", store.ErrDecrypt, decryptFailure(se, resp))
		}
		return nil, fmt.Errorf("transit decrypt: %w", unexpected(err))
	}
	if len(resp.Data.BatchResults) != len(items) {
		return nil, fmt.Errorf("transit decrypt: %w: %d results for %d inputs", store.ErrUnavailable, len(resp.Data.BatchResults), len(items))
	}
	for j, r := range resp.Data.BatchResults {
		if r.Error != "" {
			return nil, fmt.Errorf("transit decrypt %s: %w: %s", fields[idx[j]].field, store.ErrDecrypt, r.Error)
		}
		b, err := base64.StdEncoding.DecodeString(r.Plaintext)
		if err != nil {
			return nil, fmt.Errorf("transit decrypt %s: %w: plaintext is not base64", fields[idx[j]].field, store.ErrDecrypt)
		}
		out[idx[j]] = string(b)
	}
	return out, nil
}

// decryptFailure describes a failed decrypt from Vault's messages, without
// quoting anything that was sent.
func decryptFailure(se *statusError, resp batchResponse) string {
	msgs := slices.Clone(se.Msgs)
	for _, r := range resp.Data.BatchResults {
		if r.Error != "" {
			msgs = append(msgs, r.Error)
		}
	}
	if len(msgs) == 0 {
		return "ciphertext does not decrypt under this grant's context"
	}
	return strings.Join(msgs, "; ")
}

// checkKey verifies that the Transit key exists and is derived: without
// derivation the context would be ignored and a ciphertext could be moved
// between grants unnoticed.
func (t *transit) checkKey(ctx context.Context, c *conn) error {
	var out struct {
		Data struct {
			Derived bool   `json:"derived"`
			Type    string `json:"type"`
		} `json:"data"`
	}
	status, err := c.call(ctx, http.MethodGet, t.mount+"/keys/"+t.key, nil, &out)
	if status == http.StatusNotFound {
		return fmt.Errorf("transit key %s/%s not found (create it with derived=true)", t.mount, t.key)
	}
	if err != nil {
		return fmt.Errorf("read transit key %s/%s: %w", t.mount, t.key, unexpected(err))
	}
	if !out.Data.Derived {
		return fmt.Errorf("transit key %s/%s is not derived: create it with derived=true so ciphertexts are bound to their grant", t.mount, t.key)
	}
	return nil
}
