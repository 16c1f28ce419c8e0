package egress

import (
	"net/netip"
	"testing"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		host string
		want string // "" means not an address
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"127.0.0.2", "127.0.0.2"},
		{"2130706434", "127.0.0.2"},
		{"0x7f000002", "127.0.0.2"},
		{"0X7F000002", "127.0.0.2"},
		{"017700000002", "127.0.0.2"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0177.0.0.02", "127.0.0.2"},
		{"0x7f.0.0.1", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.2", "127.0.0.2"},
		{"127.0.2", "127.0.0.2"},
		{"127.0.0x102", "127.0.1.2"},
		{"169.16689662", "169.254.169.254"},
		{"0xa9fea9fe", "169.254.169.254"},
		{"0251.0376.0251.0376", "169.254.169.254"},
		{"10.1", "10.0.0.1"},
		{"0", "0.0.0.0"},
		{"0x", "0.0.0.0"},
		{"127.0.0.1.", "127.0.0.1"},
		{"4294967295", "255.255.255.255"},
		{"::1", "::1"},
		{"[::1]", "::1"},
		{"[::ffff:127.0.0.2]", "::ffff:127.0.0.2"},
		{"::ffff:127.0.0.2", "::ffff:127.0.0.2"},
		{"[fe80::1%eth0]", "fe80::1%eth0"},
		{"fe80::1%eth0", "fe80::1%eth0"},
		{"[64:ff9b::7f00:1]", "64:ff9b::7f00:1"},

		{"", ""},
		{"localhost", ""},
		{"example.com", ""},
		{"127.0.0.1.example.com", ""},
		{"4294967296", ""},
		{"256.0.0.1", ""},
		{"127.256.1", ""}, // middle parts are one byte
		{"1.2.3.4.5", ""},
		{"1.2.3.256", ""},
		{"1.2.65536", ""},
		{"08.0.0.1", ""},
		{"0x1g", ""},
		{"1..1", ""},
		{".1", ""},
		{"127.0.0.1..", ""},
		{"127.0.0.1 ", ""},
		{"+1", ""},
		{"[127.0.0.1]", ""},
		{"[::1", ""},
		{"::1]", ""},
		{"[]", ""},
		{"1.2.3.4%eth0", ""},
		{"99999999999999999999999", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			got, ok := ParseHost(tt.host)
			if tt.want == "" {
				if ok {
					t.Errorf("ParseHost(%q) = %v, true; want not an address", tt.host, got)
				}
				return
			}
			want := netip.MustParseAddr(tt.want)
			if !ok || got != want {
				t.Errorf("ParseHost(%q) = %v, %v; want %v, true", tt.host, got, ok, want)
			}
		})
	}
}

func TestLooksNumeric(t *testing.T) {
	tests := []struct {
		host string
		want bool
	}{
		{"1.2.3.4.5", true},
		{"256.0.0.1", true},
		{"example.123", true},
		{"host.0x1g", true},
		{"08.0.0.1", true},
		{"::ffff:0177.0.0.1", true},
		{"example.com", false},
		{"example.com.", false},
		{"123.example.com", false},
		{"localhost", false},
		{"x", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := looksNumeric(tt.host); got != tt.want {
			t.Errorf("looksNumeric(%q) = %v; want %v", tt.host, got, tt.want)
		}
	}
}

func FuzzParseHost(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "2130706434", "0x7f000002", "0177.0.0.1", "127.1", "[::1]", "fe80::1%eth0", "1.2.3.4.5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		ip, ok := ParseHost(host)
		if !ok {
			return
		}
		if !ip.IsValid() {
			t.Fatalf("ParseHost(%q) = invalid address, true", host)
		}
		// A host read as an address must be one a resolver would not
		// send to DNS as a name: it parses the same way again.
		if ip2, ok2 := ParseHost(ip.String()); !ok2 || ip2 != ip {
			t.Fatalf("ParseHost(%q) = %v, but ParseHost(%q) = %v, %v", host, ip, ip.String(), ip2, ok2)
		}
	})
}
