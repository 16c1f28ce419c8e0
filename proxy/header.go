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
	// One case-insensitive sweep: a key set through the map rather than
	// parsed ("ConneCtion", "onbehalf-assertion") is removed as its
	// canonical form would be.
	named := connectionNamed(h)
	for name := range h {
		if isHopByHop(name) || len(name) >= 6 && strings.EqualFold(name[:6], "proxy-") ||
			sameName(name, assertionHeader) || listedName(named, name) {
			delete(h, name)
		}
	}
}

// sameName reports whether a and b are one header name.
func sameName(a, b string) bool { return len(a) == len(b) && strings.EqualFold(a, b) }

// isHopByHop reports whether name is one of hopByHop, in any case.
func isHopByHop(name string) bool { return listedName(hopByHop, name) }

// listedName reports whether names holds name, in any case.
func listedName(names []string, name string) bool {
	for _, n := range names {
		if sameName(n, name) {
			return true
		}
	}
	return false
}

// connectionNamed returns the header names h's Connection header lists,
// whatever the case of its key.
func connectionNamed(h http.Header) []string {
	var named []string
	for key, vs := range h {
		if !sameName(key, "Connection") {
			continue
		}
		for _, v := range vs {
			for name := range strings.SplitSeq(v, ",") {
				if name = textproto.TrimString(name); name != "" {
					named = append(named, name)
				}
			}
		}
	}
	return named
}

// lookalikeTargets are the headers whose look-alikes (the name spelled
// with "_" for "-") are refused: framing, hop-by-hop headers, Host and
// Expect, which the proxy handles itself, and Authorization. Every Proxy-*
// name is refused too, as are the assertion header and the route's
// credential headers, which the caller adds.
var lookalikeTargets = []string{
	"Content-Length",
	"Transfer-Encoding",
	"Host",
	"Connection",
	"Keep-Alive",
	"Te",
	"Trailer",
	"Upgrade",
	"Expect",
	"Authorization",
}

// lookalikeHeader reports whether a request header name contains "_" and,
// read with "_" as "-" (as CGI, WSGI and servers behind them do: both
// become HTTP_TRANSFER_ENCODING), names a header the proxy treats
// specially: one of lookalikeTargets, any Proxy-* header, or one of extra.
// Such a header would pass the proxy's checks under one name and reach the
// application under the other (Transfer_Encoding beside Content-Length
// smuggles a body; X_Api_Key beside the injected X-Api-Key merges two
// credentials). It returns the header imitated, as the proxy spells it,
// never the request's own bytes. The request is refused rather than the
// header dropped: a client that sends one is broken or probing, and a
// silent drop would change the request behind its back.
func lookalikeHeader(h http.Header, extra ...[]string) (string, bool) {
	for name := range h {
		if strings.IndexByte(name, '_') < 0 {
			continue
		}
		for _, t := range lookalikeTargets {
			if sameUnderscored(name, t) {
				return t, true
			}
		}
		if len(name) >= 6 && sameUnderscored(name[:6], "Proxy-") {
			return "a Proxy-* header", true
		}
		for _, list := range extra {
			for _, t := range list {
				if sameUnderscored(name, t) {
					return t, true
				}
			}
		}
	}
	return "", false
}

// sameUnderscored reports whether name equals target ignoring case, with
// every "_" in name read as "-".
func sameUnderscored(name, target string) bool {
	if len(name) != len(target) {
		return false
	}
	for i := 0; i < len(name); i++ {
		a, b := name[i], target[i]
		if a == '_' {
			a = '-'
		}
		if lowerASCII(a) != lowerASCII(b) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// refuseLookalike returns the bad_request error for a look-alike of
// target.
func refuseLookalike(target string) *Error {
	return newError(CodeBadRequest, "a request header name spelled with \"_\" reads as "+target+" to servers that treat \"_\" as \"-\" (CGI, WSGI); rename or remove it", nil)
}

// sanitizeResponse removes hop-by-hop headers from an upstream response.
func sanitizeResponse(h http.Header) {
	named := connectionNamed(h)
	for name := range h {
		// resp.Write derives Transfer-Encoding from resp.TransferEncoding.
		if isHopByHop(name) && !sameName(name, "Transfer-Encoding") || listedName(named, name) {
			delete(h, name)
		}
	}
}
