package ctl

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/btyproject/bty/internal/fleet"
)

// TestMachinesListEveryPage: with more machines than the server answers
// in one page (GET /machines pages; the client asks 5000 at a time),
// machines list still lists every machine once, in MAC order.
func TestMachinesListEveryPage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const n = 12345
	now := time.Now().UTC()
	ms := make([]fleet.Machine, n)
	for i := range ms {
		ms[i] = fleet.Machine{MAC: fleet.MustParseMAC(fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16, (i>>8)&0xff, i&0xff)),
			BootPolicy: fleet.PolicyLocal, NextBoot: fleet.NextFlash, CreatedAt: now, UpdatedAt: now}
	}
	if err := h.srv.Store.ImportMachines(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	h.login()
	r := h.run("", "machines", "list")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")[1:] // the header first
	if len(lines) != n {
		t.Fatalf("%d machines listed, want %d", len(lines), n)
	}
	for i, l := range lines {
		if want := ms[i].MAC.String(); !strings.HasPrefix(l, want) {
			t.Fatalf("line %d is %q, want %s", i+1, l, want)
		}
	}
}
