// Package config holds what every component's configuration shares: the strict
// YAML decoder, environment overrides, and path-carrying validation errors.
//
// Components own their config structs (with a Default function and Validate
// method); this package only knows how to read them and how to report what is
// wrong with them. Validation reports every problem at once, each with the
// dotted path of the offending key (`vault.address: must be an https URL`).
package config

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is one problem with one configuration key.
type FieldError struct {
	// Path is the dotted key path, with list indexes in brackets
	// (`routes[2].host`). Empty means the document as a whole.
	Path string
	// Msg says what is wrong, in lower case, without the path.
	Msg string
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errorf returns a *FieldError for path.
func Errorf(path, format string, args ...any) error {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Problems collects validation errors. The zero value is ready to use.
type Problems struct {
	errs []error
}

// Addf records a problem at path.
func (p *Problems) Addf(path, format string, args ...any) {
	p.errs = append(p.errs, Errorf(path, format, args...))
}

// Add records err (which may be a joined error of *FieldError) under prefix:
// every FieldError path inside err is prefixed with prefix and a dot. A nil
// err is ignored.
func (p *Problems) Add(prefix string, err error) {
	if err == nil {
		return
	}
	p.errs = append(p.errs, Prefix(prefix, err))
}

// Err returns all recorded problems joined, or nil when there are none.
func (p *Problems) Err() error {
	return errors.Join(p.errs...)
}

// Prefix returns err with every *FieldError path (including those inside a
// joined error) prefixed by prefix. Errors that are not FieldErrors become
// FieldErrors at prefix.
func Prefix(prefix string, err error) error {
	if err == nil || prefix == "" {
		return err
	}
	list := Flatten(err)
	out := make([]error, 0, len(list))
	for _, e := range list {
		var fe *FieldError
		if errors.As(e, &fe) {
			out = append(out, &FieldError{Path: JoinPath(prefix, fe.Path), Msg: fe.Msg})
			continue
		}
		out = append(out, &FieldError{Path: prefix, Msg: e.Error()})
	}
	return errors.Join(out...)
}

// Flatten returns the leaves of a tree of joined errors, in order.
func Flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// JoinPath joins two key paths with a dot, leaving index suffixes intact
// (`routes` + `[1].host` = `routes[1].host`).
func JoinPath(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	case strings.HasPrefix(b, "["):
		return a + b
	}
	return a + "." + b
}
