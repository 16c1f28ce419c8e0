package identity

import (
	"net/http"
	"strings"
)

const proxyAuthorization = "Proxy-Authorization"

// headerValues returns every value of the header name, matching the name
// case-insensitively over all keys of h: a value stored under a
// non-canonical key (possible when h was built by hand) still counts, so it
// cannot slip a second assertion past the duplicate check.
func headerValues(h http.Header, name string) (first string, n int) {
	for k, vs := range h {
		if len(vs) == 0 || !strings.EqualFold(k, name) {
			continue
		}
		if n == 0 {
			first = vs[0]
		}
		n += len(vs)
	}
	return first, n
}

// trimOWS removes the optional whitespace HTTP allows around a field value.
func trimOWS(s string) string {
	return strings.Trim(s, " \t")
}

// FromHeader returns the assertion carried in header name of h. The header
// must appear exactly once with one value: absent (or blank) is ErrMissing;
// two or more values, including comma-joined ones, are ErrInvalid
// ("duplicate assertion"), since a proxy and the agent could each pick a
// different one.
func FromHeader(h http.Header, name string) (string, error) {
	v, n := headerValues(h, name)
	switch {
	case n == 0:
		return "", errNoAssertion
	case n > 1:
		return "", errDuplicate
	}
	v = trimOWS(v)
	switch {
	case v == "":
		return "", errEmptyAssertion
	case strings.IndexByte(v, ',') >= 0:
		return "", errDuplicate
	}
	return v, nil
}

// FromProxyAuthorization returns the assertion carried as
// "Proxy-Authorization: Bearer <jwt>" (scheme matched case-insensitively).
// Absent is ErrMissing; another scheme is ErrInvalid; the duplicate rule of
// FromHeader applies.
func FromProxyAuthorization(h http.Header) (string, error) {
	v, n := headerValues(h, proxyAuthorization)
	switch {
	case n == 0:
		return "", errNoAssertion
	case n > 1:
		return "", errDuplicate
	}
	v = trimOWS(v)
	if v == "" {
		return "", errEmptyAssertion
	}
	if strings.IndexByte(v, ',') >= 0 {
		return "", errDuplicate
	}
	scheme, token, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", errNotBearer
	}
	token = trimOWS(token)
	switch {
	case token == "":
		return "", errEmptyAssertion
	case strings.ContainsAny(token, " \t"):
		return "", errNotBearer
	}
	return token, nil
}

// Extract returns the one assertion of a request: from header name and, when
// proxyAuth is set (CONNECT, or any request the proxy accepts proxy
// credentials on), from Proxy-Authorization as well. An assertion in both
// places is a duplicate. A non-Bearer Proxy-Authorization (for instance
// Basic credentials a client adds on its own) is ignored when the assertion
// header is present.
func Extract(h http.Header, name string, proxyAuth bool) (string, error) {
	tok, err := FromHeader(h, name)
	if !proxyAuth {
		return tok, err
	}
	ptok, perr := FromProxyAuthorization(h)
	headerAbsent := err == errNoAssertion || err == errEmptyAssertion
	proxyAbsent := perr == errNoAssertion || perr == errEmptyAssertion || perr == errNotBearer
	switch {
	case headerAbsent && proxyAbsent:
		if perr == errNotBearer {
			return "", errNotBearer
		}
		return "", errNoAssertion
	case headerAbsent:
		return ptok, perr
	case proxyAbsent:
		return tok, err
	case err == nil && perr == nil:
		return "", errDuplicate
	case err != nil:
		return "", err
	}
	return "", perr
}
