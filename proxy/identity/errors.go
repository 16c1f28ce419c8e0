package identity

import (
	"errors"
	"strconv"
)

// Sentinel errors. Every error returned by Verify, FromHeader,
// FromProxyAuthorization and Extract wraps exactly one of them.
var (
	// ErrMissing means the request carries no assertion at all. The proxy
	// maps it to the error code identity_required.
	ErrMissing = errors.New("missing assertion")
	// ErrInvalid means an assertion was presented but refused. The proxy maps
	// it to the error code identity_invalid.
	ErrInvalid = errors.New("invalid assertion")
)

// reasonError is a refusal: a sentinel plus a short reason a human can act
// on. Reasons are fixed strings chosen by this package (at most they name an
// algorithm from a fixed table or a configured limit); they never quote the
// assertion, so they are safe to show to the agent and to log.
type reasonError struct {
	sentinel error
	reason   string
}

func (e *reasonError) Error() string { return e.sentinel.Error() + ": " + e.reason }
func (e *reasonError) Unwrap() error { return e.sentinel }

func invalid(reason string) *reasonError { return &reasonError{sentinel: ErrInvalid, reason: reason} }
func missing(reason string) *reasonError { return &reasonError{sentinel: ErrMissing, reason: reason} }

// Reason returns the short human-readable reason carried by an error from this
// package ("token expired"), or "" when err carries none.
func Reason(err error) string {
	var re *reasonError
	if errors.As(err, &re) {
		return re.reason
	}
	return ""
}

// The refusals. They are built once so that failing paths, which an
// attacker can drive at will, cost no allocation and can never pick up
// request data by accident.
var (
	errNoAssertion       = missing("no assertion presented")
	errEmptyAssertion    = missing("empty assertion")
	errDuplicate         = invalid("duplicate assertion")
	errNotBearer         = invalid("proxy authorization is not a bearer token")
	errTooLarge          = invalid("assertion too large")
	errSegments          = invalid("malformed token: want three base64url segments")
	errBase64            = invalid("malformed token: bad base64url encoding")
	errHeaderTooLarge    = invalid("malformed token: header too large")
	errHeaderJSON        = invalid("malformed token: header is not a JSON object")
	errHeaderEscape      = invalid("malformed token: escaped header member name")
	errHeaderDuplicate   = invalid("malformed token: duplicate header member")
	errClaimsJSON        = invalid("malformed token: claims are not a JSON object")
	errClaimsDuplicate   = invalid("malformed token: duplicate member in claims")
	errNoAlg             = invalid("malformed token: missing alg header")
	errUnsupportedAlg    = invalid("unsupported algorithm")
	errKIDType           = invalid("malformed token: kid must be a non-empty string")
	errKIDTooLong        = invalid("malformed token: kid too long")
	errTypType           = invalid("malformed token: typ must be a string")
	errTypTooLong        = invalid("malformed token: typ too long")
	errTokenType         = invalid("token type not accepted from this issuer")
	errMissingUser       = invalid("missing user claim")
	errMalformedAgent    = invalid("malformed agent claim")
	errMissingRequired   = invalid("missing required claim")
	errEmailUnverified   = invalid("email not verified")
	errHeaderJKU         = invalid("header jku not allowed")
	errHeaderX5U         = invalid("header x5u not allowed")
	errHeaderJWK         = invalid("header jwk not allowed")
	errHeaderX5C         = invalid("header x5c not allowed")
	errHeaderCrit        = invalid("header crit not supported")
	errHeaderMismatch    = invalid("malformed token: inconsistent header")
	errMalformed         = invalid("malformed token")
	errMalformedClaims   = invalid("malformed claims")
	errSignature         = invalid("invalid signature")
	errUnknownKID        = invalid("unknown key id")
	errNoKey             = invalid("no key for this algorithm")
	errKeyAlg            = invalid("key not usable with this algorithm")
	errExpired           = invalid("token expired")
	errNotYetValid       = invalid("token not valid yet")
	errIssuedInFuture    = invalid("token issued in the future")
	errAudience          = invalid("audience mismatch")
	errIssuer            = invalid("issuer mismatch")
	errMissingExp        = invalid("missing exp claim")
	errMissingAud        = invalid("missing aud claim")
	errMissingIss        = invalid("missing iss claim")
	errMissingSub        = invalid("missing sub claim")
	errMalformedAct      = invalid("malformed act claim")
	errMalformedJTI      = invalid("malformed jti claim")
	errLifetime          = invalid("token lifetime exceeds the maximum")
	errUnverifiable      = invalid("token cannot be verified")
	errAlgorithmRefusals = buildAlgorithmRefusals()
)

// buildAlgorithmRefusals returns one "algorithm X not allowed" error per
// known JOSE algorithm, indexed by algorithm.
func buildAlgorithmRefusals() [numAlgorithms]*reasonError {
	var out [numAlgorithms]*reasonError
	for a := algorithm(1); a < numAlgorithms; a++ {
		out[a] = invalid("algorithm " + a.String() + " not allowed")
	}
	out[algUnknown] = errUnsupportedAlg
	return out
}

// sizeError returns the refusal for an assertion over limit bytes.
func sizeError(limit int) *reasonError {
	return invalid("assertion too large (limit " + strconv.Itoa(limit) + " bytes)")
}
