package storetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// RunChanges runs the conformance suite of store.ChangeFeed: the feed
// exists once started or once a change is recorded, numbers changes in
// order, names a deleted grant before and after it goes, and loses no
// change to concurrent writers. newStore is as for Run; the store it
// returns must implement store.ChangeFeed.
func RunChanges(t *testing.T, newStore func(t *testing.T) store.Store) {
	runOptional(t, newStore, []optionalCase[store.ChangeFeed]{
		{"MissingUntilStarted", testChangesMissing},
		{"StartKeepsFeed", testChangesStartKeeps},
		{"RecordedInOrder", testChangesInOrder},
		{"RecordCreatesFeed", testChangesRecordCreates},
		{"DeleteRecordsBeforeAndAfter", testChangesDelete},
		{"ConcurrentWritersLoseNothing", testChangesConcurrent},
		{"InvalidNamesRejectedFirst", testChangesInvalidNames},
	})
}

func readChanges(t *testing.T, f store.ChangeFeed) *store.Changes {
	t.Helper()
	c, err := f.Changes(ctx(t))
	if err != nil {
		t.Fatalf("Changes: %v", err)
	}
	return c
}

func recordChange(t *testing.T, f store.ChangeFeed, provider, user string) {
	t.Helper()
	if err := f.RecordChange(ctx(t), provider, user); err != nil {
		t.Fatalf("RecordChange(%s/%s): %v", provider, user, err)
	}
}

// names returns the feed's changes after seq as provider/user strings.
func names(c *store.Changes, after uint64) []string {
	var out []string
	for _, x := range c.List {
		if x.Seq > after {
			out = append(out, x.Provider+"/"+x.User)
		}
	}
	return out
}

func testChangesMissing(t *testing.T, _ store.Store, f store.ChangeFeed) {
	if _, err := f.Changes(ctx(t)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Changes before any start: %v; want ErrNotFound", err)
	}
	if err := f.StartChanges(ctx(t)); err != nil {
		t.Fatalf("StartChanges: %v", err)
	}
	c := readChanges(t, f)
	if c.ID == "" || c.Seq != 0 || len(c.List) != 0 {
		t.Errorf("a started feed = %+v; want an ID, Seq 0 and no changes", c)
	}
	if !c.Covers(0) {
		t.Error("a started feed does not cover seq 0")
	}
}

func testChangesStartKeeps(t *testing.T, _ store.Store, f store.ChangeFeed) {
	if err := f.StartChanges(ctx(t)); err != nil {
		t.Fatal(err)
	}
	recordChange(t, f, "slack", "alice")
	before := readChanges(t, f)
	if err := f.StartChanges(ctx(t)); err != nil {
		t.Fatalf("StartChanges on a started feed: %v", err)
	}
	after := readChanges(t, f)
	if after.ID != before.ID || after.Seq != before.Seq || len(after.List) != 1 {
		t.Errorf("StartChanges on a started feed changed it: %+v → %+v", before, after)
	}
}

func testChangesInOrder(t *testing.T, _ store.Store, f store.ChangeFeed) {
	if err := f.StartChanges(ctx(t)); err != nil {
		t.Fatal(err)
	}
	start := readChanges(t, f)
	want := []string{"slack/alice", "github/bob", "slack/alice"}
	for _, n := range want {
		p, u, _ := strings.Cut(n, "/")
		recordChange(t, f, p, u)
	}
	c := readChanges(t, f)
	if c.ID != start.ID {
		t.Errorf("ID changed from %q to %q", start.ID, c.ID)
	}
	if c.Seq != start.Seq+3 {
		t.Errorf("Seq = %d; want %d", c.Seq, start.Seq+3)
	}
	if got := names(c, start.Seq); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("changes = %v; want %v", got, want)
	}
	for i, x := range c.List {
		if i > 0 && x.Seq != c.List[i-1].Seq+1 {
			t.Errorf("change %d has Seq %d after %d; want consecutive numbers", i, x.Seq, c.List[i-1].Seq)
		}
	}
	if !c.Covers(start.Seq) || !c.Covers(c.Seq) || c.Covers(c.Seq+1) {
		t.Errorf("Covers wrong on %+v", c)
	}
}

func testChangesRecordCreates(t *testing.T, _ store.Store, f store.ChangeFeed) {
	recordChange(t, f, "slack", "alice")
	c := readChanges(t, f)
	if c.ID == "" || c.Seq != 1 || fmt.Sprint(names(c, 0)) != "[slack/alice]" {
		t.Errorf("feed after one change = %+v; want one change of slack/alice", c)
	}
}

func testChangesDelete(t *testing.T, s store.Store, f store.ChangeFeed) {
	if err := f.StartChanges(ctx(t)); err != nil {
		t.Fatal(err)
	}
	put(t, s, sample("slack", "alice", "x"), 0)
	start := readChanges(t, f)
	if got := names(start, 0); len(got) != 0 {
		t.Errorf("a Put recorded changes %v; want none (only deletions and replacements are changes)", got)
	}
	if err := s.Delete(ctx(t), "slack", "alice"); err != nil {
		t.Fatal(err)
	}
	c := readChanges(t, f)
	if got := fmt.Sprint(names(c, start.Seq)); got != "[slack/alice slack/alice]" {
		t.Errorf("changes after Delete = %s; want slack/alice twice (before and after the grant goes)", got)
	}
}

func testChangesConcurrent(t *testing.T, _ store.Store, f store.ChangeFeed) {
	if err := f.StartChanges(ctx(t)); err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 4
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := f.RecordChange(ctx(t), "slack", fmt.Sprintf("user%d-%d", w, i)); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("RecordChange: %v", err)
	}
	c := readChanges(t, f)
	if c.Seq != writers*each {
		t.Errorf("Seq = %d; want %d", c.Seq, writers*each)
	}
	seen := map[string]bool{}
	for _, n := range names(c, 0) {
		seen[n] = true
	}
	for w := range writers {
		for i := range each {
			if n := fmt.Sprintf("slack/user%d-%d", w, i); !seen[n] {
				t.Errorf("change of %s lost", n)
			}
		}
	}
}

func testChangesInvalidNames(t *testing.T, _ store.Store, f store.ChangeFeed) {
	for _, tc := range [][2]string{{"../x", "alice"}, {"slack", "a/b"}, {"", "alice"}, {"slack", ""}} {
		if err := f.RecordChange(ctx(t), tc[0], tc[1]); !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("RecordChange(%q, %q) = %v; want ErrInvalidName", tc[0], tc[1], err)
		}
	}
	if _, err := f.Changes(ctx(t)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("invalid names created the feed: %v", err)
	}
}
