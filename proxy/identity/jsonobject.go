package identity

import (
	"bytes"
	"errors"

	"github.com/go-json-experiment/json/jsontext"
)

// The problems checkObject finds. The pre-parser turns them into the
// header's or the claims' refusal; they never reach a caller.
var (
	errObjectSyntax    = errors.New("not a single JSON object")
	errObjectDuplicate = errors.New("duplicate member name")
)

// checkObject reports whether b is exactly one JSON object in which no
// object (the outer one or any nested one, inside arrays too) has two
// members of the same name. Names are compared unescaped, so "sub" and
// "s\u0075b" are the same name.
//
// encoding/json, which golang-jwt uses for the header and the claims, keeps
// the last of duplicate members without a word, while other decoders keep
// the first: a token with two "sub" members names one user to this sidecar
// and perhaps another to whatever else reads it. RFC 7515 section 4 and RFC
// 7519 section 4 let a parser refuse such JSON; this package does.
//
// The check is jsontext's (the encoding/json/v2 token layer, which refuses
// duplicate names by default). It is also stricter than encoding/json in
// refusing invalid UTF-8 and lone surrogate escapes, which encoding/json
// would turn into U+FFFD; what it accepts, encoding/json decodes to the same
// names, so no duplicate can hide behind a difference between the two.
func checkObject(b []byte) error {
	if trimmed := bytes.TrimLeft(b, " \t\r\n"); len(trimmed) == 0 || trimmed[0] != '{' {
		return errObjectSyntax
	}
	// IsValid reads b with a pooled decoder: an accepted object costs no
	// decoder of its own.
	if jsontext.Value(b).IsValid() {
		return nil
	}
	// Tell a duplicate from other problems.
	dec := jsontext.NewDecoder(bytes.NewReader(b))
	if _, err := dec.ReadValue(); errors.Is(err, jsontext.ErrDuplicateName) {
		return errObjectDuplicate
	}
	return errObjectSyntax
}
