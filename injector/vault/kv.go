package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// errCASMismatch is Vault's "check-and-set parameter did not match the
// current version": the entry changed since it was read.
var errCASMismatch = errors.New("check-and-set mismatch")

// conn runs the Vault requests of one store operation with the login that
// was current when it began. On a 403 it asks the session for a new login,
// waits for it (within the operation's context) and retries that request
// once; a request that was denied changed nothing, so the retry is safe.
type conn struct {
	sess    *session
	st      *tokenState
	retried bool
}

// call performs one request; see request.
func (c *conn) call(ctx context.Context, method, path string, body, out any) (int, error) {
	status, err := request(ctx, c.st.client, method, path, body, out)
	if err == nil || !errors.Is(err, errPermissionDenied) || c.retried {
		return status, err
	}
	c.retried = true
	if !c.sess.invalidate(c.st.gen) {
		return status, err
	}
	select {
	case <-c.st.changed:
	case <-ctx.Done():
		return status, err
	}
	c.st = c.sess.current()
	return request(ctx, c.st.client, method, path, body, out)
}

// unexpected returns err wrapped in ErrUnavailable unless it already is, or
// is the caller's cancellation: a Vault answer the operation did not expect
// (a 400 or 404 it cannot interpret) means the store cannot serve it.
func unexpected(err error) error {
	if errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

// kvEntry is the current version of a KV v2 key.
type kvEntry struct {
	// data is the version's data; nil when the key does not exist or its
	// current version is deleted or destroyed.
	data json.RawMessage
	// version is the key's current version; 0 when the key has no
	// metadata at all.
	version uint64
}

// kvReadResponse is the answer to a KV v2 data read. A deleted or destroyed
// current version comes back as a 404 with data null and the metadata.
type kvReadResponse struct {
	Data struct {
		Data     json.RawMessage `json:"data"`
		Metadata struct {
			Version uint64 `json:"version"`
		} `json:"metadata"`
	} `json:"data"`
}

// readKV reads the current version of the KV v2 data path.
func (c *conn) readKV(ctx context.Context, path string) (kvEntry, error) {
	var out kvReadResponse
	status, err := c.call(ctx, http.MethodGet, path, nil, &out)
	if status == http.StatusNotFound {
		// Vault answers 404 both for a missing or deleted key (no error
		// text) and for a path no engine serves (a wrong mount: "no handler
		// for route"); only the first means "no entry".
		var se *statusError
		if errors.As(err, &se) && len(se.Msgs) > 0 {
			return kvEntry{}, unexpected(err)
		}
		return kvEntry{version: out.Data.Metadata.Version}, nil
	}
	if err != nil {
		return kvEntry{}, unexpected(err)
	}
	if out.Data.Metadata.Version == 0 {
		// A KV v1 engine answers data reads without version metadata; CAS
		// would silently not apply.
		return kvEntry{}, fmt.Errorf("%w: the mount is not a KV version 2 engine", store.ErrUnavailable)
	}
	d := out.Data.Data
	if string(d) == "null" {
		d = nil
	}
	return kvEntry{data: d, version: out.Data.Metadata.Version}, nil
}

// writeKV writes data to the KV v2 data path if its current version is cas
// (0: the key must not exist) and returns the new version. A mismatch
// returns errCASMismatch.
func (c *conn) writeKV(ctx context.Context, path string, cas uint64, data any) (uint64, error) {
	body := struct {
		Options map[string]uint64 `json:"options"`
		Data    any               `json:"data"`
	}{map[string]uint64{"cas": cas}, data}
	var out struct {
		Data struct {
			Version uint64 `json:"version"`
		} `json:"data"`
	}
	if _, err := c.call(ctx, http.MethodPut, path, body, &out); err != nil {
		var se *statusError
		if errors.As(err, &se) && se.Status == http.StatusBadRequest && se.has("check-and-set") {
			return 0, errCASMismatch
		}
		return 0, unexpected(err)
	}
	if out.Data.Version == 0 {
		return 0, fmt.Errorf("%w: write answered without a version", store.ErrUnavailable)
	}
	return out.Data.Version, nil
}

// listKV lists the keys under a KV v2 metadata folder (folders end in '/').
// A missing folder is an empty list.
func (c *conn) listKV(ctx context.Context, path string) ([]string, error) {
	var out struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	status, err := c.call(ctx, "LIST", path, nil, &out)
	if status == http.StatusNotFound {
		var se *statusError
		if errors.As(err, &se) && len(se.Msgs) > 0 {
			return nil, unexpected(err)
		}
		return nil, nil
	}
	if err != nil {
		return nil, unexpected(err)
	}
	return out.Data.Keys, nil
}

// destroyVersions permanently removes the data of every version of the key
// up to and including upTo that is not destroyed yet; the metadata (and so
// the version counter) stays. metaPath and destroyPath are the key's
// metadata and destroy paths.
func (c *conn) destroyVersions(ctx context.Context, metaPath, destroyPath string, upTo uint64) error {
	var meta struct {
		Data struct {
			Versions map[string]struct {
				Destroyed bool `json:"destroyed"`
			} `json:"versions"`
		} `json:"data"`
	}
	if _, err := c.call(ctx, http.MethodGet, metaPath, nil, &meta); err != nil {
		return unexpected(err)
	}
	var versions []uint64
	for k, v := range meta.Data.Versions {
		n, err := strconv.ParseUint(k, 10, 64)
		if err != nil || n > upTo || v.Destroyed {
			continue
		}
		versions = append(versions, n)
	}
	if len(versions) == 0 {
		return nil
	}
	slices.Sort(versions)
	if _, err := c.call(ctx, http.MethodPut, destroyPath, map[string]any{"versions": versions}, nil); err != nil {
		return unexpected(err)
	}
	return nil
}

// checkKVv2 verifies that mount is a KV version 2 engine, the way the Vault
// CLI does (sys/internal/ui/mounts answers any token that may use some path
// of the mount). A KV v1 engine would accept the writes but ignore CAS, and a
// missing mount would make every grant look absent.
func (c *conn) checkKVv2(ctx context.Context, mount string) error {
	var out struct {
		Data struct {
			Type    string            `json:"type"`
			Options map[string]string `json:"options"`
		} `json:"data"`
	}
	if _, err := c.call(ctx, http.MethodGet, "sys/internal/ui/mounts/"+mount, nil, &out); err != nil {
		return fmt.Errorf("check mount %s: %w", mount, unexpected(err))
	}
	if out.Data.Type != "kv" || out.Data.Options["version"] != "2" {
		return fmt.Errorf("mount %s is not a KV version 2 engine (type %q, version %q)", mount, out.Data.Type, out.Data.Options["version"])
	}
	return nil
}
