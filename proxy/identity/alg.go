package identity

// algorithm is a JOSE signature algorithm ("alg") known to this package.
// Known-but-refused names (none, HS384, ES512, …) have values too, so that a
// refusal can name them without quoting the token.
type algorithm uint8

const (
	algUnknown algorithm = iota
	algNone
	algHS256
	algHS384
	algHS512
	algRS256
	algRS384
	algRS512
	algPS256
	algPS384
	algPS512
	algES256
	algES384
	algES512
	algEdDSA
	numAlgorithms
)

var algorithmNames = [numAlgorithms]string{
	algUnknown: "",
	algNone:    "none",
	algHS256:   "HS256",
	algHS384:   "HS384",
	algHS512:   "HS512",
	algRS256:   "RS256",
	algRS384:   "RS384",
	algRS512:   "RS512",
	algPS256:   "PS256",
	algPS384:   "PS384",
	algPS512:   "PS512",
	algES256:   "ES256",
	algES384:   "ES384",
	algES512:   "ES512",
	algEdDSA:   "EdDSA",
}

// String returns the JOSE name of a ("" for algUnknown).
func (a algorithm) String() string {
	if a >= numAlgorithms {
		return ""
	}
	return algorithmNames[a]
}

// configurable reports whether a may appear in Config.Algorithms.
func (a algorithm) configurable() bool {
	switch a {
	case algEdDSA, algES256, algES384, algRS256, algRS384, algRS512, algPS256, algHS256:
		return true
	}
	return false
}

// algorithmFromName maps a JOSE name (case-sensitive, as RFC 7515 says) to
// its algorithm, or algUnknown.
func algorithmFromName(name string) algorithm {
	for a := algNone; a < numAlgorithms; a++ {
		if algorithmNames[a] == name {
			return a
		}
	}
	return algUnknown
}

// algSet is a set of algorithms.
type algSet uint32

func (s algSet) has(a algorithm) bool { return a != algUnknown && s&(1<<a) != 0 }
func (s *algSet) add(a algorithm)     { *s |= 1 << a }
