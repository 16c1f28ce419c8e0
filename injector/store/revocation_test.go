package store_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

func TestRevocationRedacted(t *testing.T) {
	id, err := store.NewRevocationID()
	if err != nil {
		t.Fatal(err)
	}
	r := store.Revocation{ID: id, Provider: "slack", User: "alice", AccessToken: "CANARY-AT", RefreshToken: "CANARY-RT"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d"} {
		if s := fmt.Sprintf(verb, r); strings.Contains(s, "CANARY") || !strings.Contains(s, id) {
			t.Errorf("Sprintf(%q) = %q; want the id and no token", verb, s)
		}
		if s := fmt.Sprintf(verb, &r); strings.Contains(s, "CANARY") {
			t.Errorf("Sprintf(%q, &r) = %q; want no token", verb, s)
		}
	}
}

func TestValidateRevocationID(t *testing.T) {
	id, _ := store.NewRevocationID()
	for _, good := range []string{id, strings.Repeat("0", 32)} {
		if err := store.ValidateRevocationID(good); err != nil {
			t.Errorf("ValidateRevocationID(%q) = %v; want nil", good, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("A", 32), strings.Repeat("0", 31), "../" + strings.Repeat("0", 29), strings.Repeat("g", 32)} {
		if err := store.ValidateRevocationID(bad); !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("ValidateRevocationID(%q) = %v; want ErrInvalidName", bad, err)
		}
	}
}
