package proxy

import (
	"net/http"
	"net/textproto"
	"strings"
)

// hopByHop are the headers that describe one connection and never travel
// further (RFC 9110 section 7.6.1), plus the proxy-only ones a client may
// send. Transfer-Encoding is set again by the outbound writer from the body.
var hopByHop = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// sanitizeRequest removes, in place, everything from an agent's request
// headers that must not reach the upstream: hop-by-hop headers and those the
// Connection header names, every Proxy-* header, and the assertion header.
// It does not touch credentials; Route.Inject replaces those on routed
// requests.
func sanitizeRequest(h http.Header, assertionHeader string) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		delete(h, name)
	}
	for name := range h {
		if len(name) >= 6 && strings.EqualFold(name[:6], "proxy-") {
			delete(h, name)
		}
	}
	h.Del(assertionHeader)
	// Non-canonical keys (set through the map) are caught by a
	// case-insensitive sweep, so "onbehalf-assertion" cannot slip by.
	for name := range h {
		if strings.EqualFold(name, assertionHeader) {
			delete(h, name)
		}
	}
}

// sanitizeResponse removes hop-by-hop headers from an upstream response.
func sanitizeResponse(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopByHop {
		if name == "Transfer-Encoding" {
			continue // resp.Write derives it from resp.TransferEncoding
		}
		delete(h, name)
	}
}
