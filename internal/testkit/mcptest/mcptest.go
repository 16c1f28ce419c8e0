// Package mcptest is a real MCP server for onbehalf's tests, built with the
// official Go SDK (github.com/modelcontextprotocol/go-sdk): Streamable HTTP,
// protected by the SDK's bearer-token middleware, serving RFC 9728
// protected-resource metadata, with tools that answer as one JSON object or
// as a stream of server-sent events spaced in time.
//
// Handler serves, on whatever host and port it is reached at:
//
//   - /mcp: the MCP endpoint with sessions (Mcp-Session-Id) and SSE
//     answers: POST streams each answer as text/event-stream, GET opens the
//     server's message stream, DELETE ends a session;
//   - /mcp-json: the same tools, stateless, answering application/json;
//   - /.well-known/oauth-protected-resource/mcp (and …/mcp-json): RFC 9728
//     metadata naming Options.AuthorizationServers.
//
// Without a valid bearer token both endpoints answer 401 with
// WWW-Authenticate: Bearer resource_metadata="…", as the MCP authorization
// specification asks. The tools:
//
//   - whoami: the user the token was issued to;
//   - search_issues(query, limit): a read-only search;
//   - count_slowly(n, interval_ms): n progress notifications (when the
//     call carries a progress token), interval_ms apart, then the result;
//   - delete_repository(name): destructive; tests assert policy keeps
//     agents from ever reaching it.
//
// Calls records every tool call that reached a handler, with the user.
// The server is safe for concurrent use.
package mcptest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/onbehalf-dev/onbehalf/internal/testkit/oauthtest"
)

// Paths the handler serves.
const (
	PathMCP      = "/mcp"
	PathMCPJSON  = "/mcp-json"
	metadataPath = "/.well-known/oauth-protected-resource"
)

// maxCountSlowly bounds count_slowly, so a test cannot hang a handler.
const (
	maxCountSlowly    = 1000
	maxCountInterval  = 10 * time.Second
	defaultCountDelay = 20 * time.Millisecond
)

// Options configure a Server.
type Options struct {
	// Verify checks bearer tokens; see Introspector.
	Verify auth.TokenVerifier
	// AuthorizationServers are the issuers named in the RFC 9728 metadata.
	AuthorizationServers []string
	// Scopes are the scopes the metadata advertises and every token needs.
	Scopes []string
}

// Call is one tool call that reached a handler.
type Call struct {
	Tool string
	User string
}

// Server is the MCP server's handler and what it recorded.
type Server struct {
	o       Options
	mcp     *mcp.Server
	stream  *mcp.StreamableHTTPHandler
	json    *mcp.StreamableHTTPHandler
	mu      sync.Mutex
	calls   []Call
	handler http.Handler
}

// New builds a server; serve Handler over TLS (upstreamtest does).
func New(o Options) *Server {
	s := &Server{o: o}
	s.mcp = mcp.NewServer(&mcp.Implementation{Name: "mcptest", Version: "1.0.0"}, nil)
	s.addTools()
	getServer := func(*http.Request) *mcp.Server { return s.mcp }
	// The tests reach the server by name (api.mcp.test) on 127.0.0.1; the
	// SDK's DNS-rebinding guard would refuse that Host on a loopback
	// address.
	s.stream = mcp.NewStreamableHTTPHandler(getServer, &mcp.StreamableHTTPOptions{DisableLocalhostProtection: true})
	s.json = mcp.NewStreamableHTTPHandler(getServer, &mcp.StreamableHTTPOptions{
		Stateless: true, JSONResponse: true, DisableLocalhostProtection: true,
	})
	mux := http.NewServeMux()
	mux.Handle(PathMCP, s.protect(PathMCP, s.stream))
	mux.Handle(PathMCPJSON, s.protect(PathMCPJSON, s.json))
	mux.HandleFunc(metadataPath+"/", s.serveMetadata)
	s.handler = mux
	return s
}

// Close ends every session still open (a client that never sent its
// DELETE leaves one behind, with a goroutine).
func (s *Server) Close() {
	for ss := range s.mcp.Sessions() {
		_ = ss.Close()
	}
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Calls returns the tool calls that reached a handler so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Resource returns the resource identifier (RFC 8707) of the endpoint at
// path as a client reaches it through r: https://host/path.
func Resource(r *http.Request, path string) string { return "https://" + r.Host + path }

// protect puts the SDK's bearer-token middleware in front of next, with
// the resource_metadata URL of the host the request reached.
func (s *Server) protect(path string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		opts := &auth.RequireBearerTokenOptions{
			ResourceMetadataURL: "https://" + r.Host + metadataPath + path,
			Scopes:              s.o.Scopes,
		}
		auth.RequireBearerToken(s.o.Verify, opts)(next).ServeHTTP(w, r)
	})
}

// serveMetadata serves RFC 9728 metadata for /mcp and /mcp-json.
func (s *Server) serveMetadata(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, metadataPath)
	if path != PathMCP && path != PathMCPJSON {
		http.NotFound(w, r)
		return
	}
	auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
		Resource:               Resource(r, path),
		AuthorizationServers:   s.o.AuthorizationServers,
		ScopesSupported:        s.o.Scopes,
		BearerMethodsSupported: []string{"header"},
		ResourceName:           "mcptest",
	}).ServeHTTP(w, r)
}

// Introspector verifies tokens issued by as through its introspection,
// requiring, when requireAudience is set, that the token was issued for
// the endpoint the request reached (RFC 8707: a token for another resource
// is refused).
func Introspector(as *oauthtest.Server, requireAudience bool) auth.TokenVerifier {
	return func(_ context.Context, token string, r *http.Request) (*auth.TokenInfo, error) {
		ti, ok := as.IntrospectToken(token)
		if !ok {
			return nil, fmt.Errorf("%w: the token is not active", auth.ErrInvalidToken)
		}
		if requireAudience && !slices.Contains(ti.Audience, Resource(r, r.URL.Path)) {
			return nil, fmt.Errorf("%w: the token was not issued for this resource", auth.ErrInvalidToken)
		}
		return &auth.TokenInfo{Scopes: ti.Scopes, Expiration: ti.Expiry, UserID: ti.User}, nil
	}
}

// StaticVerifier accepts exactly token, for user, with scopes.
func StaticVerifier(token, user string, scopes []string) auth.TokenVerifier {
	return func(_ context.Context, got string, _ *http.Request) (*auth.TokenInfo, error) {
		if got != token {
			return nil, fmt.Errorf("%w: unknown token", auth.ErrInvalidToken)
		}
		return &auth.TokenInfo{Scopes: scopes, Expiration: time.Now().Add(time.Hour), UserID: user}, nil
	}
}

func (s *Server) record(req *mcp.CallToolRequest) string {
	user := ""
	if ti := req.Extra.TokenInfo; ti != nil {
		user = ti.UserID
	}
	s.mu.Lock()
	s.calls = append(s.calls, Call{Tool: req.Params.Name, User: user})
	s.mu.Unlock()
	return user
}

// Tool inputs.
type (
	searchIn struct {
		Query string `json:"query" jsonschema:"what to search for"`
		Limit int    `json:"limit,omitempty" jsonschema:"the most issues to return"`
	}
	countIn struct {
		N          int `json:"n" jsonschema:"how many progress events to send"`
		IntervalMS int `json:"interval_ms,omitempty" jsonschema:"milliseconds between events"`
	}
	deleteIn struct {
		Name string `json:"name" jsonschema:"the repository to delete"`
	}
)

func text(format string, args ...any) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf(format, args...)}}}
}

func (s *Server) addTools() {
	readOnly := &mcp.ToolAnnotations{ReadOnlyHint: true}
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "whoami", Description: "The user this server sees.", Annotations: readOnly},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			return text("you are %s", s.record(req)), nil, nil
		})
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "search_issues", Description: "Search issues.", Annotations: readOnly},
		func(_ context.Context, req *mcp.CallToolRequest, in searchIn) (*mcp.CallToolResult, any, error) {
			user := s.record(req)
			return text("found %d issues matching %q for %s", min(max(in.Limit, 1), 3), in.Query, user), nil, nil
		})
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "count_slowly", Description: "Count, reporting progress.", Annotations: readOnly},
		func(ctx context.Context, req *mcp.CallToolRequest, in countIn) (*mcp.CallToolResult, any, error) {
			s.record(req)
			if in.N < 0 || in.N > maxCountSlowly {
				return nil, nil, errors.New("n out of range")
			}
			interval := time.Duration(in.IntervalMS) * time.Millisecond
			if interval <= 0 {
				interval = defaultCountDelay
			}
			interval = min(interval, maxCountInterval)
			token := req.Params.GetProgressToken()
			for i := 1; i <= in.N; i++ {
				select {
				case <-ctx.Done():
					return nil, nil, ctx.Err()
				case <-time.After(interval):
				}
				if token != nil {
					err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
						ProgressToken: token, Progress: float64(i), Total: float64(in.N), Message: fmt.Sprintf("step %d", i),
					})
					if err != nil {
						return nil, nil, err
					}
				}
			}
			return text("counted to %d", in.N), nil, nil
		})
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "delete_repository", Description: "Delete a repository for good.",
		Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true)}},
		func(_ context.Context, req *mcp.CallToolRequest, in deleteIn) (*mcp.CallToolResult, any, error) {
			user := s.record(req)
			return text("deleted %s as %s", in.Name, user), nil, nil
		})
}

func ptr[T any](v T) *T { return &v }
