package audit

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Redacted replaces a credential's value wherever one would be logged.
const Redacted = "REDACTED"

// DefaultAssertionHeader is the default name of the header carrying the
// acting user's signed assertion (identity.DefaultHeader).
const DefaultAssertionHeader = "Onbehalf-Assertion"

// sensitiveParams are query parameters whose values are credentials
// (OAuth 2.0 and OIDC parameters, common API-key and pre-signed-URL names).
// Compared case-insensitively after percent-decoding.
var sensitiveParams = []string{
	"access_token", "refresh_token", "id_token", "token", "code",
	"client_secret", "assertion", "client_assertion", "password",
	"key", "api_key", "apikey", "sig", "signature",
}

// sensitiveParamParts mark a query parameter as a credential when its name
// contains one of them (x-amz-security-token, subject_token, …).
var sensitiveParamParts = []string{"token", "secret", "password", "signature"}

// sensitiveHeaders are always redacted (canonical form).
var sensitiveHeaders = []string{
	"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key",
}

// sensitiveHeaderParts mark a header as a credential when its name contains
// one of them, case-insensitively (X-Auth-Token, X-Client-Secret,
// X-Goog-Api-Key, X-Amz-Security-Token, …).
var sensitiveHeaderParts = []string{
	"token", "secret", "authorization", "cookie", "password", "api-key", "apikey",
	"assertion", "credential", "signature",
}

// RedactQuery returns the raw query string with the values of credential
// parameters replaced by REDACTED. Everything else is kept byte for byte,
// including order and encoding. Both & and ; count as separators, since some
// servers split on either. A query without credentials is returned as is,
// without allocating.
func RedactQuery(raw string) string {
	if raw == "" || !queryHasSecret(raw) {
		return raw
	}
	var b strings.Builder
	b.Grow(len(raw))
	rest := raw
	for {
		i := strings.IndexAny(rest, "&;")
		part := rest
		if i >= 0 {
			part = rest[:i]
		}
		key, _, hasValue := strings.Cut(part, "=")
		if hasValue && sensitiveParam(key) {
			b.WriteString(key)
			b.WriteString("=" + Redacted)
		} else {
			b.WriteString(part)
		}
		if i < 0 {
			return b.String()
		}
		b.WriteByte(rest[i])
		rest = rest[i+1:]
	}
}

func queryHasSecret(raw string) bool {
	rest := raw
	for {
		i := strings.IndexAny(rest, "&;")
		part := rest
		if i >= 0 {
			part = rest[:i]
		}
		if key, _, hasValue := strings.Cut(part, "="); hasValue && sensitiveParam(key) {
			return true
		}
		if i < 0 {
			return false
		}
		rest = rest[i+1:]
	}
}

// sensitiveParam reports whether a raw (possibly percent-encoded) query key
// names a credential.
func sensitiveParam(key string) bool {
	if strings.ContainsAny(key, "%+") {
		if k, err := url.QueryUnescape(key); err == nil {
			key = k
		}
	}
	for _, s := range sensitiveParams {
		if strings.EqualFold(key, s) {
			return true
		}
	}
	for _, s := range sensitiveParamParts {
		if containsFold(key, s) {
			return true
		}
	}
	return false
}

// RedactPath redacts the query (and a query-like fragment) of a path in
// request-URI form ("/api/x?access_token=…"). A path without credentials is
// returned as is, without allocating.
func RedactPath(p string) string {
	i := strings.IndexAny(p, "?#")
	if i < 0 {
		return p
	}
	path, rest := p[:i], p[i:]
	var query, frag string
	hasQuery, hasFrag := false, false
	if rest[0] == '?' {
		hasQuery = true
		query, frag, hasFrag = strings.Cut(rest[1:], "#")
	} else {
		hasFrag = true
		frag = rest[1:]
	}
	rq, rf := RedactQuery(query), RedactQuery(frag)
	if rq == query && rf == frag {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	b.WriteString(path)
	if hasQuery {
		b.WriteByte('?')
		b.WriteString(rq)
	}
	if hasFrag {
		b.WriteByte('#')
		b.WriteString(rf)
	}
	return b.String()
}

// RedactURL returns u as a string with credential query parameters and
// fragment parameters (the implicit flow puts tokens there) replaced by
// REDACTED, and any user information (user names can be tokens too)
// replaced by REDACTED. u is not modified; nil gives "".
func RedactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	if c.User != nil {
		c.User = url.User(Redacted)
	}
	c.RawQuery = RedactQuery(c.RawQuery)
	if c.Fragment != "" {
		raw := c.EscapedFragment()
		if red := RedactQuery(raw); red != raw {
			if f, err := url.PathUnescape(red); err == nil {
				c.Fragment, c.RawFragment = f, red
			} else {
				c.Fragment, c.RawFragment = Redacted, ""
			}
		}
	}
	return c.String()
}

// Redactor decides which headers carry credentials. It is immutable and
// safe for concurrent use. The zero value is not ready; use [NewRedactor].
type Redactor struct {
	names []string // canonical header names always redacted
}

// defaultRedactor backs [Headers] and [RedactedHeaders].
var defaultRedactor = NewRedactor(DefaultAssertionHeader)

// NewRedactor returns a Redactor that redacts the built-in credential
// headers (Authorization, Proxy-Authorization, Cookie, Set-Cookie,
// X-Api-Key, and any header whose name contains token, secret,
// authorization, cookie, password, api-key, apikey, assertion, credential or
// signature) plus the given header names, typically the configured
// assertion header and each route's credential header.
func NewRedactor(extra ...string) *Redactor {
	names := slices.Clone(sensitiveHeaders)
	for _, n := range extra {
		if n != "" {
			names = append(names, http.CanonicalHeaderKey(n))
		}
	}
	return &Redactor{names: names}
}

// Sensitive reports whether the header named name carries credentials.
func (r *Redactor) Sensitive(name string) bool {
	for _, n := range r.names {
		if strings.EqualFold(name, n) {
			return true
		}
	}
	for _, p := range sensitiveHeaderParts {
		if containsFold(name, p) {
			return true
		}
	}
	return false
}

// Headers returns a zapcore.ObjectMarshaler that logs h with the values of
// credential headers replaced by REDACTED.
func (r *Redactor) Headers(h http.Header) zapcore.ObjectMarshaler {
	return redactedHeaders{h: h, r: r}
}

// HeadersField returns a zap field logging h under key, redacted.
func (r *Redactor) HeadersField(key string, h http.Header) zap.Field {
	return zap.Object(key, r.Headers(h))
}

// Headers logs an http.Header through zap with the values of credential
// headers replaced by REDACTED, using the default [Redactor] (which includes
// the Onbehalf-Assertion header). Use [Redactor.Headers] when the assertion
// or route credential headers have other names.
type Headers http.Header

var _ zapcore.ObjectMarshaler = Headers(nil)

// MarshalLogObject writes the headers in name order, one member per header:
// a string for one value, an array for several, REDACTED for credentials.
func (h Headers) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	return redactedHeaders{h: http.Header(h), r: defaultRedactor}.MarshalLogObject(enc)
}

type redactedHeaders struct {
	h http.Header
	r *Redactor
}

func (rh redactedHeaders) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	names := make([]string, 0, len(rh.h))
	for k := range rh.h {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		vs := rh.h[k]
		switch {
		case rh.r.Sensitive(k):
			enc.AddString(k, Redacted)
		case len(vs) == 1:
			enc.AddString(k, vs[0])
		default:
			if err := enc.AddArray(k, zapcore.ArrayMarshalerFunc(func(ae zapcore.ArrayEncoder) error {
				for _, v := range vs {
					ae.AppendString(v)
				}
				return nil
			})); err != nil {
				return err
			}
		}
	}
	return nil
}

// RedactedURL returns a zap field logging u under key through [RedactURL].
func RedactedURL(key string, u *url.URL) zap.Field {
	return zap.String(key, RedactURL(u))
}

// RedactedPath returns a zap field logging a request-URI path under key
// through [RedactPath].
func RedactedPath(key, path string) zap.Field {
	return zap.String(key, RedactPath(path))
}

// RedactedQuery returns a zap field logging a raw query under key through
// [RedactQuery].
func RedactedQuery(key, rawQuery string) zap.Field {
	return zap.String(key, RedactQuery(rawQuery))
}

// RedactedHeaders returns a zap field logging h under key with the default
// [Redactor].
func RedactedHeaders(key string, h http.Header) zap.Field {
	return zap.Object(key, Headers(h))
}

// containsFold reports whether s contains substr, ignoring ASCII case,
// without allocating. substr must be lower case.
func containsFold(s, substr string) bool {
	n := len(substr)
	for i := 0; i+n <= len(s); i++ {
		j := 0
		for ; j < n; j++ {
			c := s[i+j]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != substr[j] {
				break
			}
		}
		if j == n {
			return true
		}
	}
	return false
}
