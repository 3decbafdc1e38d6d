package fleet

import (
	"strings"
	"testing"
)

func TestParseMAC(t *testing.T) {
	tests := []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "lower colon", in: "aa:bb:cc:dd:ee:ff", want: "aa:bb:cc:dd:ee:ff"},
		{name: "upper colon", in: "AA:BB:CC:DD:EE:FF", want: "aa:bb:cc:dd:ee:ff"},
		{name: "mixed case hyphen", in: "52-54-00-Ab-cD-09", want: "52:54:00:ab:cd:09"},
		{name: "ipxe hexhyp", in: "52-54-00-12-34-56", want: "52:54:00:12:34:56"},
		{name: "digits only", in: "00:11:22:33:44:55", want: "00:11:22:33:44:55"},
		{name: "mixed separators", in: "aa:bb-cc:dd:ee:ff", wantErr: true},
		{name: "no separators", in: "aabbccddeeff", wantErr: true},
		{name: "dots", in: "aabb.ccdd.eeff", wantErr: true},
		{name: "single digit octets", in: "a:b:c:d:e:f", wantErr: true},
		{name: "five octets", in: "aa:bb:cc:dd:ee", wantErr: true},
		{name: "seven octets", in: "aa:bb:cc:dd:ee:ff:00", wantErr: true},
		{name: "non hex", in: "gg:bb:cc:dd:ee:ff", wantErr: true},
		{name: "underscore", in: "aa_bb_cc_dd_ee_ff", wantErr: true},
		{name: "spaces", in: " aa:bb:cc:dd:ee:f", wantErr: true},
		{name: "trailing separator", in: "aa:bb:cc:dd:ee:f:", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "infiniband length", in: "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMAC(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseMAC(%q) = %q, want an error", tt.in, got)
				}
				if !IsValidation(err) || !strings.Contains(err.Error(), "aa:bb:cc:dd:ee:ff") || !strings.Contains(err.Error(), "'-'") {
					t.Errorf("error %q should be a ValidationError naming the accepted forms", err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("ParseMAC(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestMACText(t *testing.T) {
	var m MAC
	if err := m.UnmarshalText([]byte("AA-BB-CC-00-11-22")); err != nil {
		t.Fatal(err)
	}
	if m.String() != "aa:bb:cc:00:11:22" || m.Hex() != "aabbcc001122" || m.IsZero() {
		t.Errorf("parsed %q (hex %q, zero %v)", m, m.Hex(), m.IsZero())
	}
	b, err := m.MarshalText()
	if err != nil || string(b) != "aa:bb:cc:00:11:22" {
		t.Errorf("MarshalText = %q, %v", b, err)
	}
	if err := m.UnmarshalText([]byte("aa:bb")); !IsValidation(err) {
		t.Errorf("UnmarshalText(aa:bb) = %v, want a validation error", err)
	}
	if err := m.UnmarshalText(nil); err != nil || !m.IsZero() || m.Hex() != "" {
		t.Errorf("UnmarshalText(empty) = %v, %q", err, m)
	}
}
