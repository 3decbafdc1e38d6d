package fleet

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const (
	ipA = "10.0.0.7"  // the machine
	ipB = "10.0.0.66" // someone sending its MAC
)

func flashMachine() Machine {
	return Machine{MAC: testMAC, BootPolicy: PolicyFlash, Image: "a.img", NextBoot: NextFlash, UserData: "#cloud-config\n"}
}

func visit(ip string, at time.Time) Visit {
	return Visit{IP: ip, At: at, Token: NewCycleToken(), TTL: time.Hour}
}

func refused(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrCycleRefused) {
		t.Errorf("%s: %v, want refused", what, err)
	}
}

// TestCycleConflict: a contact from a second address during an open
// cycle gets the local disk and changes nothing but the conflict
// fields; the machine's own calls still work, the stranger's never.
func TestCycleConflict(t *testing.T) {
	m, d := flashMachine().Contact(visit(ipA, t0))
	tok := d.Cycle
	if d.Serve != PolicyFlash || !ValidCycleToken(tok) {
		t.Fatalf("first contact: %+v", d)
	}
	before := m
	at := t0.Add(time.Minute)
	m2, d2 := m.Contact(visit(ipB, at))
	if d2.Serve != PolicyLocal || !d2.Conflict || d2.Cycle != "" || d2.Note == "" {
		t.Fatalf("conflicting contact served %+v", d2)
	}
	want := before
	want.LastConflictAt, want.LastConflictIP = &at, ipB
	if diff := cmp.Diff(want, m2, cmp.AllowUnexported(MAC{})); diff != "" {
		t.Fatalf("conflicting contact changed the record (-want +got):\n%s", diff)
	}
	// The stranger: no token, a guessed one, or even the right one
	// from its own address: refused.
	refused(t, "no token", m2.CheckCycle("", ipB, at))
	refused(t, "guessed token", m2.CheckCycle(NewCycleToken(), ipB, at))
	refused(t, "right token, wrong address", m2.CheckCycle(tok, ipB, at))
	_, err := m2.ReleaseSeed("user-data", tok, ipB, at)
	refused(t, "seed to the stranger", err)
	// The machine itself.
	m3, err := m2.ReleaseSeed("user-data", tok, ipA, at)
	if err != nil || !m3.Cycle.UserDataServed || m2.Cycle.UserDataServed {
		t.Fatalf("seed to the machine: %v, %+v (before %+v)", err, m3.Cycle, m2.Cycle)
	}
	_, err = m3.ReleaseSeed("user-data", tok, ipA, at)
	refused(t, "user-data a second time", err)
	m4, err := m3.ReleaseSeed("meta-data", tok, ipA, at)
	if err != nil || !m4.Cycle.MetaDataServed {
		t.Fatalf("meta-data: %v", err)
	}
	m5 := m4.Done(Progress{}, at)
	refused(t, "done twice", m5.CheckCycle(tok, ipA, at))
	refused(t, "seed after done", func() error { _, err := m5.ReleaseSeed("meta-data", tok, ipA, at); return err }())

	// After done, a stranger's contact does not use up the disk turn.
	m6, d6 := m5.Contact(visit(ipB, at.Add(time.Minute)))
	if !d6.Conflict || m6.NextBoot != NextLocal {
		t.Fatalf("stranger after done: %+v, next boot %q", d6, m6.NextBoot)
	}
	// The machine boots its disk once, which ends the cycle ...
	m7, d7 := m6.Contact(visit(ipA, at.Add(2*time.Minute)))
	if d7.Serve != PolicyLocal || d7.Conflict || m7.NextBoot != NextFlash || m7.Cycle != nil {
		t.Fatalf("machine after done: %+v, next %q, cycle %+v", d7, m7.NextBoot, m7.Cycle)
	}
	// ... and, with no cycle open, any address may open the next.
	if _, d8 := m7.Contact(visit(ipB, at.Add(3*time.Minute))); d8.Serve != PolicyFlash || d8.Conflict {
		t.Fatalf("contact with no cycle open: %+v", d8)
	}
}

func TestCycleExpiresAndRenews(t *testing.T) {
	m, d := flashMachine().Contact(visit(ipA, t0))
	old := d.Cycle
	// A new contact from the cycle's own address replaces the cycle:
	// the old token is no longer good.
	m, d = m.Contact(visit(ipA, t0.Add(time.Minute)))
	if d.Cycle == old || d.Conflict {
		t.Fatalf("renewed: %+v", d)
	}
	refused(t, "old token", m.CheckCycle(old, ipA, t0.Add(time.Minute)))
	if err := m.CheckCycle(d.Cycle, ipA, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Past its TTL the cycle is closed: calls are refused and another
	// address may start a new one.
	late := t0.Add(time.Minute + time.Hour)
	refused(t, "expired", m.CheckCycle(d.Cycle, ipA, late))
	m2, d2 := m.Contact(visit(ipB, late))
	if d2.Conflict || d2.Serve != PolicyFlash || m2.Cycle.IP != ipB {
		t.Fatalf("contact after expiry: %+v, cycle %+v", d2, m2.Cycle)
	}
}

func TestCycleFailedEndsCalls(t *testing.T) {
	m, d := flashMachine().Contact(visit(ipA, t0))
	m = m.Failed("disk gone", t0.Add(time.Minute))
	refused(t, "done after failed", m.CheckCycle(d.Cycle, ipA, t0.Add(2*time.Minute)))
	// The failed cycle still guards the MAC until the machine retries.
	if _, d2 := m.Contact(visit(ipB, t0.Add(2*time.Minute))); !d2.Conflict {
		t.Errorf("stranger after a failure: %+v", d2)
	}
	if _, d3 := m.Contact(visit(ipA, t0.Add(3*time.Minute))); d3.Conflict || d3.Serve != PolicyFlash {
		t.Errorf("retry: %+v", d3)
	}
}

func TestCycleLocalOpensNone(t *testing.T) {
	m, d := Machine{MAC: testMAC, BootPolicy: PolicyLocal}.Contact(visit(ipA, t0))
	if m.Cycle != nil || d.Cycle != "" {
		t.Fatalf("local contact opened a cycle: %+v", m.Cycle)
	}
	refused(t, "done without a cycle", m.CheckCycle("", ipA, t0))
	if _, d := m.Contact(visit(ipB, t0)); d.Conflict {
		t.Error("conflict without a cycle")
	}
}

func TestCycleTokenForm(t *testing.T) {
	a, b := NewCycleToken(), NewCycleToken()
	if !ValidCycleToken(a) || a == b {
		t.Fatalf("tokens %q %q", a, b)
	}
	for _, bad := range []string{"", a[:31], a + "0", "G" + a[1:], "A" + a[1:], a[:30] + " x"} {
		if ValidCycleToken(bad) {
			t.Errorf("ValidCycleToken(%q)", bad)
		}
	}
	if HashCycleToken(a) == a || len(HashCycleToken(a)) != 64 {
		t.Error("hash")
	}
}

func TestForImportDropsCycle(t *testing.T) {
	m, _ := flashMachine().Contact(visit(ipA, t0))
	got, err := m.ForImport(t1)
	if err != nil || got.Cycle != nil {
		t.Fatalf("ForImport kept the cycle: %+v, %v", got.Cycle, err)
	}
}

// TestDHCPVisit: the proxy-DHCP's contact for a machine whose next boot
// is the disk (no address yet) uses the disk turn, keeps last_seen_ip,
// opens no cycle and is never a conflict, even while a cycle is open.
func TestDHCPVisit(t *testing.T) {
	m, d := flashMachine().Contact(visit(ipA, t0))
	m = m.Done(Progress{}, t0.Add(time.Minute))
	if !m.Cycle.Open(t0.Add(2 * time.Minute)) {
		t.Fatal("the cycle should still be open after done")
	}
	m2, d2 := m.Contact(Visit{At: t0.Add(2 * time.Minute), DHCP: true})
	if d2.Conflict || d2.Serve != PolicyLocal || d2.Cycle != "" {
		t.Fatalf("DHCP contact after done: %+v", d2)
	}
	if m2.NextBoot != NextFlash || m2.LastSeenIP != ipA || m2.Cycle != nil || m2.LastConflictAt != nil {
		t.Fatalf("DHCP contact after done: next %q ip %q cycle %+v conflict %v", m2.NextBoot, m2.LastSeenIP, m2.Cycle, m2.LastConflictAt)
	}
	if !m2.LastSeenAt.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("last_seen_at %v", m2.LastSeenAt)
	}
	_ = d
}
