package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// DisabledBuiltins are removed from the OPA capabilities the engine compiles
// with. A policy decides from its input and data only: http.send and
// net.lookup_ip_addr would let a policy (or whoever can change it) reach the
// network from inside the credential broker, and opa.runtime would expose the
// process environment, where secrets live.
var DisabledBuiltins = []string{"http.send", "net.lookup_ip_addr", "opa.runtime"}

// ErrDisabledBuiltin is wrapped by load errors for a policy that calls one of
// DisabledBuiltins.
var ErrDisabledBuiltin = errors.New("policy uses disabled builtin")

// capabilities returns this OPA version's capabilities without
// DisabledBuiltins and with no network hosts allowed. Each call returns a
// fresh copy, safe to hand to a compiler.
func capabilities() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	c.Builtins = slices.DeleteFunc(c.Builtins, func(b *ast.Builtin) bool {
		return slices.Contains(DisabledBuiltins, b.Name)
	})
	c.AllowNet = []string{}
	return c
}

// newCompiler returns a compiler that knows only the enabled builtins.
func newCompiler() *ast.Compiler {
	return ast.NewCompiler().
		WithCapabilities(capabilities()).
		WithDefaultRegoVersion(ast.RegoV1)
}

// explainCompileError rewrites a compile error that comes from calling a
// disabled builtin ("undefined function http.send") into one wrapping
// ErrDisabledBuiltin that says so. Other errors are returned unchanged.
func explainCompileError(err error) error {
	var errs ast.Errors
	if !errors.As(err, &errs) {
		return err
	}
	for _, e := range errs {
		name, ok := strings.CutPrefix(e.Message, "undefined function ")
		if !ok || !slices.Contains(DisabledBuiltins, name) {
			continue
		}
		if e.Location != nil {
			return fmt.Errorf("%w %s (%s:%d)", ErrDisabledBuiltin, name, e.Location.File, e.Location.Row)
		}
		return fmt.Errorf("%w %s", ErrDisabledBuiltin, name)
	}
	return err
}
