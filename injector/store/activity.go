package store

import (
	"context"
	"time"
	"unicode/utf8"
)

// Activity is what people are shown about a grant beyond the grant itself:
// when an agent last used it and which, and when it was last revoked and by
// whom. It holds no secret.
//
// It is a record of its own beside the grant, not a field of it: writing it
// never changes the grant's Version, so a sidecar noting a use can never
// make a refresh's compare-and-swap fail, and it outlives a deleted grant,
// so the apps page can say an app was revoked.
type Activity struct {
	// LastUsedAt is when a sidecar last injected the grant's token, to
	// within the throttle of whoever records uses (a minute for the
	// sidecar), and LastUsedBy the agent that sent that request (the
	// assertion's act.sub; "" when it named none).
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
	LastUsedBy string    `json:"last_used_by,omitempty"`
	// RevokedAt is when the grant was last revoked and RevokedBy who
	// revoked it (user, admin or cli).
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	RevokedBy string    `json:"revoked_by,omitempty"`
}

// maxActivityField bounds LastUsedBy and RevokedBy: they are for display,
// and an agent id comes from an assertion.
const maxActivityField = 256

// Merge returns a updated with the newer facts of b: the last use and the
// revocation are each taken, time and name together, from whichever of a
// and b has the later time. Merge is commutative, associative and
// idempotent, so writers that merge concurrently converge whatever order
// their writes land in.
func (a Activity) Merge(b Activity) Activity {
	if b.LastUsedAt.After(a.LastUsedAt) || (b.LastUsedAt.Equal(a.LastUsedAt) && b.LastUsedBy > a.LastUsedBy) {
		a.LastUsedAt, a.LastUsedBy = b.LastUsedAt, b.LastUsedBy
	}
	if b.RevokedAt.After(a.RevokedAt) || (b.RevokedAt.Equal(a.RevokedAt) && b.RevokedBy > a.RevokedBy) {
		a.RevokedAt, a.RevokedBy = b.RevokedAt, b.RevokedBy
	}
	return a
}

// Normalize returns a in the form stores keep: times in UTC without a
// monotonic reading, names cut to maxActivityField bytes on a character
// boundary.
func (a Activity) Normalize() Activity {
	a.LastUsedAt, a.RevokedAt = a.LastUsedAt.UTC().Round(0), a.RevokedAt.UTC().Round(0)
	a.LastUsedBy, a.RevokedBy = cutField(a.LastUsedBy), cutField(a.RevokedBy)
	return a
}

func cutField(s string) string {
	if len(s) <= maxActivityField {
		return s
	}
	n := maxActivityField
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// ActivityStore keeps one Activity record per provider and user, beside
// the grants. Both stores implement it; the sidecar and the connect server
// use it when the store they were given does.
type ActivityStore interface {
	// RecordActivity merges a into the record of user at provider (see
	// Activity.Merge), creating it. Names are validated first, as for
	// Store methods.
	RecordActivity(ctx context.Context, provider, user string, a Activity) error
	// Activity returns the record of user at provider, or an error
	// wrapping ErrNotFound when there is none.
	Activity(ctx context.Context, provider, user string) (Activity, error)
}
