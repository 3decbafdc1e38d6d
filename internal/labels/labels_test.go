package labels

import (
	"strings"
	"testing"

	"github.com/btyproject/bty/internal/fleet"
)

func TestParseAndMatch(t *testing.T) {
	reqs, err := Parse("role=ci, rack!=r3,gpu,!quarantined,tier in (a,b)")
	if err != nil || len(reqs) != 5 {
		t.Fatalf("Parse: %+v %v", reqs, err)
	}
	for _, tt := range []struct {
		l    fleet.Labels
		want bool
	}{
		{fleet.Labels{"role": "ci", "gpu": "a100", "tier": "a"}, true},
		{fleet.Labels{"role": "ci", "gpu": "", "tier": "b", "rack": "r1"}, true},
		{fleet.Labels{"role": "ci", "gpu": "a100", "tier": "a", "rack": "r3"}, false},
		{fleet.Labels{"role": "ci", "tier": "a"}, false},
		{fleet.Labels{"role": "ci", "gpu": "x", "tier": "c"}, false},
		{fleet.Labels{"role": "ci", "gpu": "x", "tier": "a", "quarantined": "yes"}, false},
		{fleet.Labels{"role": "build", "gpu": "x", "tier": "a"}, false},
		{nil, false},
	} {
		if got := tt.l.Matches(reqs); got != tt.want {
			t.Errorf("%v matches: %v, want %v", tt.l, got, tt.want)
		}
	}
	if reqs, err := Parse(" "); err != nil || reqs != nil {
		t.Errorf("empty selector: %v %v", reqs, err)
	}
	for _, bad := range []string{"a b", "tier in a", "x>1", strings.Repeat("a", MaxSelectorBytes+1)} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestCheckAndFlag(t *testing.T) {
	for _, good := range []string{"role=ci", "example.com/rack=r-3", "gpu=", "role-"} {
		if _, _, err := ParseFlag(good); err != nil {
			t.Errorf("ParseFlag(%q): %v", good, err)
		}
	}
	for _, bad := range []string{"role", "-", "ro le=ci", "role=c i", "role=" + strings.Repeat("v", 64), "/x=1", strings.Repeat("k", 64) + "=1"} {
		if _, _, err := ParseFlag(bad); err == nil {
			t.Errorf("ParseFlag(%q) accepted", bad)
		}
	}
	if k, v, _ := ParseFlag("rack-"); k != "rack" || v != nil {
		t.Errorf("rack-: %q %v, want a removal", k, v)
	}
}
