package storetest

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// RunActivity runs the conformance suite of store.ActivityStore: records
// merge newer facts and keep the rest, never touch the grant beside them,
// outlive its deletion and converge under concurrent writers. newStore is
// as for Run; the store it returns must implement store.ActivityStore.
func RunActivity(t *testing.T, newStore func(t *testing.T) store.Store) {
	runOptional(t, newStore, []optionalCase[store.ActivityStore]{
		{"Missing", testActivityMissing},
		{"MergeKeepsNewerFacts", testActivityMerge},
		{"GrantUntouched", testActivityGrantUntouched},
		{"OutlivesDeletedGrant", testActivityOutlivesGrant},
		{"ConcurrentWritersConverge", testActivityConcurrent},
		{"InvalidNamesRejectedFirst", testActivityInvalidNames},
		{"LongNamesCut", testActivityLongNames},
	})
}

// at is a fixed time plus d, in a zone other than UTC so that stores are
// seen to normalise it.
func at(d time.Duration) time.Time {
	return time.Date(2026, 3, 4, 5, 6, 7, 890000000, time.FixedZone("CET", 3600)).Add(d)
}

func record(t *testing.T, a store.ActivityStore, provider, user string, act store.Activity) {
	t.Helper()
	if err := a.RecordActivity(ctx(t), provider, user, act); err != nil {
		t.Fatalf("RecordActivity(%s/%s): %v", provider, user, err)
	}
}

func wantActivity(t *testing.T, a store.ActivityStore, provider, user string, want store.Activity) {
	t.Helper()
	got, err := a.Activity(ctx(t), provider, user)
	if err != nil {
		t.Fatalf("Activity(%s/%s): %v", provider, user, err)
	}
	if diff := cmp.Diff(want.Normalize(), got); diff != "" {
		t.Errorf("Activity(%s/%s) (-want +got):\n%s", provider, user, diff)
	}
	if got.LastUsedAt.Location() != time.UTC || got.RevokedAt.Location() != time.UTC {
		t.Errorf("Activity(%s/%s) times in %s and %s; want UTC", provider, user, got.LastUsedAt.Location(), got.RevokedAt.Location())
	}
}

func testActivityMissing(t *testing.T, _ store.Store, a store.ActivityStore) {
	if _, err := a.Activity(ctx(t), "slack", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Activity of nothing recorded: %v; want ErrNotFound", err)
	}
}

func testActivityMerge(t *testing.T, _ store.Store, a store.ActivityStore) {
	record(t, a, "slack", "alice", store.Activity{LastUsedAt: at(0), LastUsedBy: "agent-1"})
	wantActivity(t, a, "slack", "alice", store.Activity{LastUsedAt: at(0), LastUsedBy: "agent-1"})

	// An older use (a slow writer) changes nothing; a newer one replaces
	// time and agent together.
	record(t, a, "slack", "alice", store.Activity{LastUsedAt: at(-time.Minute), LastUsedBy: "agent-old"})
	wantActivity(t, a, "slack", "alice", store.Activity{LastUsedAt: at(0), LastUsedBy: "agent-1"})
	record(t, a, "slack", "alice", store.Activity{LastUsedAt: at(time.Minute), LastUsedBy: "agent-2"})
	wantActivity(t, a, "slack", "alice", store.Activity{LastUsedAt: at(time.Minute), LastUsedBy: "agent-2"})

	// A revocation keeps the last use, and a use keeps the revocation.
	record(t, a, "slack", "alice", store.Activity{RevokedAt: at(2 * time.Minute), RevokedBy: "user"})
	record(t, a, "slack", "alice", store.Activity{LastUsedAt: at(90 * time.Second), LastUsedBy: "agent-3"})
	wantActivity(t, a, "slack", "alice", store.Activity{LastUsedAt: at(90 * time.Second), LastUsedBy: "agent-3", RevokedAt: at(2 * time.Minute), RevokedBy: "user"})

	// Other keys are their own.
	if _, err := a.Activity(ctx(t), "slack", "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Activity(slack/bob): %v; want ErrNotFound", err)
	}
	if _, err := a.Activity(ctx(t), "github", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Activity(github/alice): %v; want ErrNotFound", err)
	}
}

func testActivityGrantUntouched(t *testing.T, s store.Store, a store.ActivityStore) {
	g := sample("slack", "alice", "a")
	v := put(t, s, g, 0)
	record(t, a, "slack", "alice", store.Activity{LastUsedAt: at(0), LastUsedBy: "agent-1"})
	wantGrant(t, s, g, v)
	// A refresh that read version v before the use was noted still lands.
	g2 := sample("slack", "alice", "b")
	g2.Generation = 2
	put(t, s, g2, v)
	if got, err := s.List(ctx(t), ""); err != nil || len(got) != 1 {
		t.Errorf("List after recording activity: %d grants, %v; want the one grant", len(got), err)
	}
}

func testActivityOutlivesGrant(t *testing.T, s store.Store, a store.ActivityStore) {
	put(t, s, sample("slack", "alice", "a"), 0)
	record(t, a, "slack", "alice", store.Activity{LastUsedAt: at(0), LastUsedBy: "agent-1"})
	if err := s.Delete(ctx(t), "slack", "alice"); err != nil {
		t.Fatal(err)
	}
	record(t, a, "slack", "alice", store.Activity{RevokedAt: at(time.Minute), RevokedBy: "admin"})
	wantActivity(t, a, "slack", "alice", store.Activity{LastUsedAt: at(0), LastUsedBy: "agent-1", RevokedAt: at(time.Minute), RevokedBy: "admin"})
	// A grant created again does not disturb the record either.
	put(t, s, sample("slack", "alice", "b"), 0)
	wantActivity(t, a, "slack", "alice", store.Activity{LastUsedAt: at(0), LastUsedBy: "agent-1", RevokedAt: at(time.Minute), RevokedBy: "admin"})
}

func testActivityConcurrent(t *testing.T, _ store.Store, a store.ActivityStore) {
	var wg sync.WaitGroup
	errs := make(chan error, concurrentWriters)
	for i := range concurrentWriters {
		wg.Go(func() {
			act := store.Activity{LastUsedAt: at(time.Duration(i) * time.Second), LastUsedBy: "agent-" + string(rune('a'+i))}
			if i%2 == 0 {
				act.RevokedAt, act.RevokedBy = at(time.Duration(i)*time.Second), "user"
			}
			errs <- a.RecordActivity(ctx(t), "slack", "alice", act)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("RecordActivity: %v", err)
		}
	}
	last := concurrentWriters - 1
	lastEven := last - last%2
	wantActivity(t, a, "slack", "alice", store.Activity{
		LastUsedAt: at(time.Duration(last) * time.Second), LastUsedBy: "agent-" + string(rune('a'+last)),
		RevokedAt: at(time.Duration(lastEven) * time.Second), RevokedBy: "user",
	})
}

func testActivityInvalidNames(t *testing.T, _ store.Store, a store.ActivityStore) {
	for _, n := range [][2]string{{"../slack", "alice"}, {"slack", "alice/../bob"}, {"", "alice"}, {"slack", ""}} {
		if err := a.RecordActivity(ctx(t), n[0], n[1], store.Activity{LastUsedAt: at(0)}); !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("RecordActivity(%q, %q): %v; want ErrInvalidName", n[0], n[1], err)
		}
		if _, err := a.Activity(ctx(t), n[0], n[1]); !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("Activity(%q, %q): %v; want ErrInvalidName", n[0], n[1], err)
		}
	}
}

func testActivityLongNames(t *testing.T, _ store.Store, a store.ActivityStore) {
	long := strings.Repeat("é", 200) // 400 bytes
	record(t, a, "slack", "alice", store.Activity{LastUsedAt: at(0), LastUsedBy: long})
	got, err := a.Activity(ctx(t), "slack", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.LastUsedBy) != 256 || !strings.HasPrefix(long, got.LastUsedBy) {
		t.Errorf("LastUsedBy is %d bytes; want the first 256 of %d", len(got.LastUsedBy), len(long))
	}
}
