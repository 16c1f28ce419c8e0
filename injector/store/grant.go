package store

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// Status is the lifecycle state of a grant.
type Status string

// Grant statuses, as stored in the status field (docs/design.md#grant-store).
const (
	// StatusActive means the grant can be used and refreshed.
	StatusActive Status = "active"
	// StatusReconnectRequired means the provider rejected the refresh token
	// (invalid_grant) and the user must connect again; nobody refreshes it.
	StatusReconnectRequired Status = "reconnect_required"
)

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	return s == StatusActive || s == StatusReconnectRequired
}

// redacted replaces a non-empty secret wherever a grant is printed or logged.
const redacted = "REDACTED"

// Grant is one user's OAuth grant for one provider.
//
// The JSON form (the field names of docs/design.md#grant-store) carries the
// tokens in clear: it is the storage encoding, for stores that protect it
// themselves.
// Every human-facing rendering redacts them: fmt (any verb, via Format),
// zap (MarshalLogObject) and slog (LogValue) print "REDACTED" for a non-empty
// token, so a grant logged by mistake leaks nothing. A Grant nested in an
// unexported struct field is printed by fmt without calling these methods:
// log the grant itself, not a struct that hides it.
type Grant struct {
	Provider     string    `json:"provider"`
	User         string    `json:"user"`
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	TokenType    string    `json:"token_type"`
	Expiry       time.Time `json:"expiry"`
	Scopes       []string  `json:"scopes"`
	Status       Status    `json:"status"`
	ConnectedAt  time.Time `json:"connected_at"`
	// ProviderAccount is the account id at the provider the user connected
	// (for display and audit; not a secret).
	ProviderAccount string `json:"provider_account"`
	// Generation is incremented by whoever refreshes or reconnects the grant,
	// so a reader can tell that someone else already refreshed it.
	Generation int64 `json:"generation"`
	// IssuedAt is when the access token was issued (at the connection or
	// the last refresh); zero when unknown (grants stored before it was
	// recorded). With Expiry it gives the token's lifetime, which bounds
	// how early it is refreshed.
	IssuedAt time.Time `json:"issued_at,omitzero"`
}

// Clone returns a deep copy of g (nil for nil).
func (g *Grant) Clone() *Grant {
	if g == nil {
		return nil
	}
	c := *g
	c.Scopes = slices.Clone(g.Scopes)
	return &c
}

// redact returns redacted for a non-empty secret and "" for an empty one, so
// a log still shows whether a token is present.
func redact(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// String returns a one-line description of g with tokens redacted.
func (g Grant) String() string {
	var b strings.Builder
	b.WriteString("Grant{")
	b.WriteString(g.Provider)
	b.WriteByte('/')
	b.WriteString(g.User)
	b.WriteString(" status=")
	b.WriteString(string(g.Status))
	b.WriteString(" generation=")
	b.WriteString(strconv.FormatInt(g.Generation, 10))
	b.WriteString(" token_type=")
	b.WriteString(g.TokenType)
	b.WriteString(" expiry=")
	b.WriteString(g.Expiry.Format(time.RFC3339))
	if !g.IssuedAt.IsZero() {
		b.WriteString(" issued_at=")
		b.WriteString(g.IssuedAt.Format(time.RFC3339))
	}
	b.WriteString(" scopes=")
	b.WriteString(strings.Join(g.Scopes, ","))
	b.WriteString(" access_token=")
	b.WriteString(redact(g.AccessToken))
	b.WriteString(" refresh_token=")
	b.WriteString(redact(g.RefreshToken))
	b.WriteByte('}')
	return b.String()
}

// GoString returns a Go-syntax-like rendering of g with tokens redacted.
func (g Grant) GoString() string {
	return fmt.Sprintf("store.Grant{Provider:%q, User:%q, AccessToken:%q, RefreshToken:%q, TokenType:%q, "+
		"Expiry:%q, Scopes:%#v, Status:%q, ConnectedAt:%q, ProviderAccount:%q, Generation:%d, IssuedAt:%q}",
		g.Provider, g.User, redact(g.AccessToken), redact(g.RefreshToken), g.TokenType,
		g.Expiry.Format(time.RFC3339Nano), g.Scopes, string(g.Status), g.ConnectedAt.Format(time.RFC3339Nano),
		g.ProviderAccount, g.Generation, g.IssuedAt.Format(time.RFC3339Nano))
}

// Format implements fmt.Formatter so that every verb, not only %v and %s,
// goes through the redacting String (or GoString for %#v). Without it,
// fmt.Sprintf("%d", g) would print the string fields, tokens included.
func (g Grant) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(g.GoString()))
		return
	}
	_, _ = f.Write([]byte(g.String()))
}

// MarshalLogObject implements zapcore.ObjectMarshaler with tokens redacted.
func (g Grant) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("provider", g.Provider)
	enc.AddString("user", g.User)
	enc.AddString("access_token", redact(g.AccessToken))
	enc.AddString("refresh_token", redact(g.RefreshToken))
	enc.AddString("token_type", g.TokenType)
	enc.AddTime("expiry", g.Expiry)
	if err := enc.AddArray("scopes", zapcore.ArrayMarshalerFunc(func(ae zapcore.ArrayEncoder) error {
		for _, s := range g.Scopes {
			ae.AppendString(s)
		}
		return nil
	})); err != nil {
		return err
	}
	enc.AddString("status", string(g.Status))
	enc.AddTime("connected_at", g.ConnectedAt)
	enc.AddString("provider_account", g.ProviderAccount)
	enc.AddInt64("generation", g.Generation)
	if !g.IssuedAt.IsZero() {
		enc.AddTime("issued_at", g.IssuedAt)
	}
	return nil
}

// LogValue implements slog.LogValuer with tokens redacted.
func (g Grant) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("provider", g.Provider),
		slog.String("user", g.User),
		slog.String("access_token", redact(g.AccessToken)),
		slog.String("refresh_token", redact(g.RefreshToken)),
		slog.String("token_type", g.TokenType),
		slog.Time("expiry", g.Expiry),
		slog.Any("scopes", g.Scopes),
		slog.String("status", string(g.Status)),
		slog.Time("connected_at", g.ConnectedAt),
		slog.String("provider_account", g.ProviderAccount),
		slog.Int64("generation", g.Generation),
		slog.Time("issued_at", g.IssuedAt),
	)
}

// ValidateGrant checks what every store checks before writing g: g is not
// nil, its provider and user names are valid (errors wrap ErrInvalidName) and
// its status is known (errors wrap ErrInvalidArgument).
func ValidateGrant(g *Grant) error {
	if g == nil {
		return fmt.Errorf("%w: nil grant", ErrInvalidArgument)
	}
	if err := ValidateProvider(g.Provider); err != nil {
		return err
	}
	if err := ValidateUser(g.User); err != nil {
		return err
	}
	if !g.Status.Valid() {
		return fmt.Errorf("%w: grant status must be %q or %q", ErrInvalidArgument, StatusActive, StatusReconnectRequired)
	}
	return nil
}

// View is a grant as the admin surfaces show it (the connect server's admin
// API, `grants list -o json`): what it is and whose, never a token.
type View struct {
	Provider        string   `json:"provider"`
	User            string   `json:"user"`
	Status          string   `json:"status"`
	Scopes          []string `json:"scopes"`
	ProviderAccount string   `json:"provider_account,omitempty"`
	ConnectedAt     string   `json:"connected_at,omitempty"`
	Expiry          string   `json:"expiry,omitempty"`
	Generation      int64    `json:"generation"`
}

// Views returns the views of grants, in order; times are RFC 3339 in UTC,
// and missing scopes an empty list.
func Views(grants []*Grant) []View {
	out := make([]View, 0, len(grants))
	for _, g := range grants {
		v := View{
			Provider: g.Provider, User: g.User, Status: string(g.Status), Scopes: g.Scopes,
			ProviderAccount: g.ProviderAccount, Generation: g.Generation,
		}
		if v.Scopes == nil {
			v.Scopes = []string{}
		}
		if !g.ConnectedAt.IsZero() {
			v.ConnectedAt = g.ConnectedAt.UTC().Format(time.RFC3339)
		}
		if !g.Expiry.IsZero() {
			v.Expiry = g.Expiry.UTC().Format(time.RFC3339)
		}
		out = append(out, v)
	}
	return out
}
