package store

import "fmt"

// Name length limits. A provider name is a short identifier chosen by the
// operator; a user id comes from an assertion's sub claim and is typically an
// email address or an IdP subject, which fit comfortably in 256 characters.
const (
	maxProviderLen = 63
	maxUserLen     = 256
	maxHolderLen   = 256
)

// ValidateProvider reports whether s is a valid provider name: a lower-case
// letter followed by up to 62 lower-case letters, digits, '_' or '-'
// (^[a-z][a-z0-9_-]{0,62}$). The error wraps ErrInvalidName and does not echo
// s, which may come from an untrusted request.
func ValidateProvider(s string) error {
	if len(s) == 0 || len(s) > maxProviderLen {
		return fmt.Errorf("%w: provider name must be 1 to %d characters", ErrInvalidName, maxProviderLen)
	}
	if s[0] < 'a' || s[0] > 'z' {
		return fmt.Errorf("%w: provider name must start with a lower-case letter", ErrInvalidName)
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("%w: provider name may contain only a-z, 0-9, '_' and '-'", ErrInvalidName)
		}
	}
	return nil
}

// ValidateUser reports whether s is a valid user id: 1 to 256 characters of
// A-Z, a-z, 0-9, '.', '_', '@', '+' and '-', not starting with '.' or '-' and
// not containing "..". The set excludes '/', '\', NUL, whitespace and
// everything outside ASCII, so a user id can be a path or key segment as is.
// The error wraps ErrInvalidName and does not echo s.
func ValidateUser(s string) error {
	if len(s) == 0 || len(s) > maxUserLen {
		return fmt.Errorf("%w: user id must be 1 to %d characters", ErrInvalidName, maxUserLen)
	}
	if s[0] == '.' || s[0] == '-' {
		return fmt.Errorf("%w: user id must not start with '.' or '-'", ErrInvalidName)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '_' || c == '@' || c == '+' || c == '-':
		case c == '.':
			if i > 0 && s[i-1] == '.' {
				return fmt.Errorf("%w: user id must not contain \"..\"", ErrInvalidName)
			}
		default:
			return fmt.Errorf("%w: user id may contain only A-Z, a-z, 0-9, '.', '_', '@', '+' and '-'", ErrInvalidName)
		}
	}
	return nil
}

// ValidateHolder reports whether s is a valid lease holder: 1 to 256
// printable ASCII characters other than space. Holders are stored inside the
// lease record, never in a key, but are still bounded because they appear in
// operator-facing errors and logs.
func ValidateHolder(s string) error {
	if len(s) == 0 || len(s) > maxHolderLen {
		return fmt.Errorf("%w: lease holder must be 1 to %d characters", ErrInvalidName, maxHolderLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return fmt.Errorf("%w: lease holder may contain only printable ASCII without spaces", ErrInvalidName)
		}
	}
	return nil
}
