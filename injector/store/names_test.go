package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

func TestValidateProvider(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"slack", true},
		{"a", true},
		{"google_workspace", true},
		{"ms-graph2", true},
		{"a" + strings.Repeat("b", 62), true},
		{"", false},
		{"a" + strings.Repeat("b", 63), false},
		{"Slack", false},
		{"1slack", false},
		{"_slack", false},
		{"-slack", false},
		{"sla.ck", false},
		{"sla/ck", false},
		{"..", false},
		{"slack ", false},
		{"slack\x00", false},
		{"slаck", false}, // Cyrillic а
	}
	for _, tt := range tests {
		err := store.ValidateProvider(tt.in)
		if tt.ok && err != nil {
			t.Errorf("ValidateProvider(%q) = %v; want nil", tt.in, err)
		}
		if !tt.ok && !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("ValidateProvider(%q) = %v; want ErrInvalidName", tt.in, err)
		}
		if err != nil && tt.in != "" && strings.Contains(err.Error(), tt.in) {
			t.Errorf("ValidateProvider(%q) error echoes the input: %v", tt.in, err)
		}
	}
}

func TestValidateUser(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"alice", true},
		{"A", true},
		{"alice.smith+tag@example.com", true},
		{"user_1-2", true},
		{"0042", true},
		{"a.b.c", true},
		{"alice.", true},
		{"alice@", true},
		{"_alice", true},
		{"@alice", true},
		{strings.Repeat("u", 256), true},
		{"", false},
		{strings.Repeat("u", 257), false},
		{".alice", false},
		{"-alice", false},
		{"al..ice", false},
		{"alice..", false},
		{"..", false},
		{".", false},
		{"alice/bob", false},
		{"alice\\bob", false},
		{"alice bob", false},
		{"alice\tbob", false},
		{"alice\x00", false},
		{"alice:1", false},
		{"alice%2F", false},
		{"alicé", false},
		{"alice\n", false},
	}
	for _, tt := range tests {
		err := store.ValidateUser(tt.in)
		if tt.ok && err != nil {
			t.Errorf("ValidateUser(%q) = %v; want nil", tt.in, err)
		}
		if !tt.ok && !errors.Is(err, store.ErrInvalidName) {
			t.Errorf("ValidateUser(%q) = %v; want ErrInvalidName", tt.in, err)
		}
		if err != nil && len(tt.in) > 2 && strings.Contains(err.Error(), tt.in) {
			t.Errorf("ValidateUser(%q) error echoes the input: %v", tt.in, err)
		}
	}
}

func TestCheckLeaseArgs(t *testing.T) {
	tests := []struct {
		holder string
		ttl    time.Duration
		want   error
	}{
		{"sidecar-7@pod-abc:123", 10 * time.Second, nil},
		{"h", store.MaxLeaseTTL, nil},
		{"", time.Second, store.ErrInvalidName},
		{"a b", time.Second, store.ErrInvalidName},
		{"h\x7f", time.Second, store.ErrInvalidName},
		{strings.Repeat("h", 257), time.Second, store.ErrInvalidName},
		{"h", 0, store.ErrInvalidArgument},
		{"h", -time.Second, store.ErrInvalidArgument},
		{"h", store.MaxLeaseTTL + 1, store.ErrInvalidArgument},
	}
	for _, tt := range tests {
		err := store.CheckLeaseArgs(tt.holder, tt.ttl)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("CheckLeaseArgs(%q, %s) = %v; want %v", tt.holder, tt.ttl, err, tt.want)
		}
	}
}

func FuzzValidateUser(f *testing.F) {
	for _, s := range []string{"alice", "a..b", "../x", "alice@example.com", ".x", "x/y", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if store.ValidateUser(s) != nil {
			return
		}
		// Whatever passes is a safe single path segment.
		if strings.ContainsAny(s, "/\\\x00 :%") || strings.Contains(s, "..") || s == "." ||
			strings.HasPrefix(s, "-") || strings.HasPrefix(s, ".") || len(s) > 256 {
			t.Errorf("ValidateUser accepted %q", s)
		}
		for _, r := range s {
			if r > 0x7e || r < 0x21 {
				t.Errorf("ValidateUser accepted non-printable or non-ASCII %q", s)
			}
		}
	})
}
