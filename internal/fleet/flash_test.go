package fleet

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func localMachine() Machine {
	return Machine{MAC: testMAC, BootPolicy: PolicyLocal, NextBoot: NextFlash, ProvisioningMode: ModeCloudInit, UserData: "#cloud-config\n"}
}

// TestDemandFlash: a demand flash is served before the policy until it
// reports, carries its overrides, and leaves the record's policy and
// image alone; after done the policy (local) decides again.
func TestDemandFlash(t *testing.T) {
	m := localMachine()
	if _, err := m.Reflash(ReflashRequest{}, FlashRun{At: t0}); !IsValidation(err) {
		t.Fatalf("reflash with no image anywhere: %v", err)
	}
	img, host := "job.img", "ci-7"
	m, err := m.Reflash(ReflashRequest{Image: &img, Hostname: &host}, FlashRun{At: t0, DefaultDeadline: 30 * time.Minute, ImageSHA256: "ab"})
	if err != nil {
		t.Fatal(err)
	}
	f := m.Flash
	if f.Trigger != TriggerDemand || f.Image != img || f.Hostname != host || f.ReadyCheck != ReadyPhoneHome ||
		!f.Deadline.Equal(t0.Add(30*time.Minute)) || f.Phase != PhaseRequested || !f.Running() || f.ImageSHA256 != "ab" {
		t.Fatalf("the demand flash: %+v", f)
	}
	f.ID = 7
	if _, err := m.Reflash(ReflashRequest{}, FlashRun{At: t0}); !errors.As(err, new(*FlashInProgressError)) || !strings.Contains(err.Error(), "flash 7") {
		t.Fatalf("a second reflash: %v", err)
	}
	if d := Decide(m); d.Serve != PolicyFlash || !strings.Contains(d.Why, "reflash 7") {
		t.Fatalf("decide: %+v", d)
	}
	if a := m.AsFlashed(); a.Image != img || a.Hostname != host {
		t.Fatalf("as flashed: %q %q", a.Image, a.Hostname)
	}
	m = m.Powered(7, "pxe-once+cycle", nil, t0.Add(time.Second))
	m, d := m.Contact(visit(ipA, t0.Add(time.Minute)))
	if d.Serve != PolicyFlash || m.Flash.PXEAt == nil || m.Flash.TokenHash != HashCycleToken(d.Cycle) || m.Flash.Phase != PhasePXE {
		t.Fatalf("the PXE contact: %+v %+v", d, m.Flash)
	}
	// The machine reboots before reporting: the demand still stands.
	tok := d.Cycle
	m, d = m.Contact(visit(ipA, t0.Add(2*time.Minute)))
	if d.Serve != PolicyFlash || m.Flash.TokenHash != HashCycleToken(d.Cycle) || !m.Flash.PXEAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("a second PXE contact before the report: %+v %+v", d, m.Flash)
	}
	if _, err := m.PhoneHome(d.Cycle, ipA, t0.Add(3*time.Minute)); !errors.Is(err, ErrCycleRefused) {
		t.Fatalf("phone-home before done: %v", err)
	}
	m = m.Progressed(Progress{BytesWritten: 10, Rate: -5, Image: "../x"}, t0.Add(3*time.Minute))
	if m.Flash.FetchAt == nil || m.Flash.BytesWritten != 10 || m.Flash.Rate != 0 {
		t.Fatalf("progress: %+v", m.Flash)
	}
	m = m.Done(Progress{BytesWritten: 100, TotalBytes: 100, SHA256: strings.Repeat("c", 64)}, t0.Add(4*time.Minute))
	if m.Flash.DoneAt == nil || m.Flash.Phase != PhaseDone || !m.Flash.AwaitingReady() || m.Flash.ImageSHA256 != strings.Repeat("c", 64) {
		t.Fatalf("done: %+v", m.Flash)
	}
	if d := Decide(m); d.Serve != PolicyLocal {
		t.Fatalf("after done a local machine boots its disk: %+v", d)
	}
	m, _ = m.Contact(visit(ipA, t0.Add(5*time.Minute)))
	if m.Flash.DiskAt == nil || m.Flash.Phase != PhaseDisk {
		t.Fatalf("the disk boot: %+v", m.Flash)
	}
	if _, err := m.PhoneHome(tok, "10.9.9.9", t0.Add(6*time.Minute)); !errors.Is(err, ErrCycleRefused) {
		t.Fatalf("phone-home with the first contact's token: %v", err)
	}
	m, err = m.PhoneHome(d.Cycle, "10.9.9.9", t0.Add(6*time.Minute))
	if err != nil || m.Flash.Result != FlashReady || m.Flash.OSAddress != "10.9.9.9" || m.Flash.Duration(t1) != 6*time.Minute {
		t.Fatalf("phone-home: %v %+v", err, m.Flash)
	}
	if m.BootPolicy != PolicyLocal || m.Image != "" || m.Hostname != "" {
		t.Fatalf("the record changed: %+v", m)
	}
	if _, err := m.PhoneHome(d.Cycle, "10.9.9.9", t0.Add(7*time.Minute)); !errors.Is(err, ErrCycleRefused) {
		t.Fatalf("a second phone-home: %v", err)
	}
}

// TestPolicyFlashRecords: a flash-policy contact starts a policy flash;
// booting into the live env again before ready abandons it; the
// interactive live env's done is a tui flash; a failure ends one;
// deadlines time out with the phase; a failed power start ends a demand.
func TestPolicyFlashRecords(t *testing.T) {
	m := flashMachine()
	m.ReadyCheck = "tcp:2222"
	m, d := m.Contact(Visit{IP: ipA, At: t0, Token: NewCycleToken(), FlashDeadline: time.Hour})
	f := m.Flash
	if d.Serve != PolicyFlash || f.Trigger != TriggerPolicy || f.Image != "a.img" || f.ReadyCheck != "tcp:2222" || f.Phase != PhasePXE || !f.Deadline.Equal(t0.Add(time.Hour)) {
		t.Fatalf("policy flash: %+v", f)
	}
	m, _ = m.Contact(visit(ipA, t0.Add(time.Minute))) // a reboot before done
	if m.Flash == f || m.Flash.Result != FlashRunning || m.Flash.ID != 0 {
		t.Fatalf("a new flash was not started: %+v", m.Flash)
	}
	// The abandoned one ended, for the store to write.
	if r := m.Replaced; r == nil || r.Result != FlashFailed || !strings.Contains(r.Reason, "PXE-booted again in phase pxe") || !r.RequestedAt.Equal(t0) {
		t.Fatalf("abandoned: %+v", m.Replaced)
	}
	m.Replaced = nil
	if m2, ok := m.TimeOut(t0.Add(30 * time.Minute)); ok {
		t.Fatalf("timed out early: %+v", m2.Flash)
	}
	m2, ok := m.TimeOut(t0.Add(2 * time.Hour))
	if !ok || m2.Flash.Result != FlashTimeout || !strings.Contains(m2.Flash.Reason, "stuck in phase pxe") {
		t.Fatalf("timeout: %+v", m2.Flash)
	}
	m3 := m.Failed("disk on fire", t0.Add(3*time.Minute))
	if m3.Flash.Result != FlashFailed || m3.Flash.Reason != "disk on fire" || m3.NextBoot != NextFlash {
		t.Fatalf("failed: %+v", m3.Flash)
	}

	// The interactive live env: no flash at the contact, one at done.
	tm := Machine{MAC: testMAC, BootPolicy: PolicyTUI, NextBoot: NextFlash, ReadyCheck: ReadyNone}
	tm, d = tm.Contact(visit(ipA, t0))
	if tm.Flash != nil {
		t.Fatalf("a tui contact started a flash: %+v", tm.Flash)
	}
	tm = tm.Done(Progress{Image: "picked.img", BytesWritten: 5}, t0.Add(time.Minute))
	if f := tm.Flash; f == nil || f.Trigger != TriggerTUI || f.Image != "picked.img" || f.Result != FlashReady || !f.RequestedAt.Equal(t0) || f.TokenHash != HashCycleToken(d.Cycle) {
		t.Fatalf("tui flash: %+v", tm.Flash)
	}
	// bty-tui seeds no phone-home: a cloud-init machine's tui flash
	// waits for SSH instead.
	cm := Machine{MAC: testMAC, BootPolicy: PolicyTUI, NextBoot: NextFlash, ProvisioningMode: ModeCloudInit}
	cm, _ = cm.Contact(visit(ipA, t0))
	if cm = cm.Done(Progress{}, t0.Add(time.Minute)); cm.Flash.ReadyCheck != ReadyTCP22 || !cm.Flash.AwaitingReady() {
		t.Fatalf("a cloud-init machine's tui flash: %+v", cm.Flash)
	}

	// A demand whose power start failed ends failed and is not served.
	img := "a.img"
	lm, _ := localMachine().Reflash(ReflashRequest{Image: &img}, FlashRun{At: t0})
	lm.Flash.ID = 3
	lm = lm.Powered(3, "cycle", errors.New("BMC said no"), t0.Add(time.Second))
	if lm.Flash.Result != FlashFailed || lm.Flash.Reason != "power: BMC said no" || Decide(lm).Serve != PolicyLocal {
		t.Fatalf("power failure: %+v", lm.Flash)
	}
	if lm2, ok := lm.Cancel(3, t1); ok || lm2.Flash.Result != FlashFailed {
		t.Fatal("cancelled an ended flash")
	}
}

func TestReadyCheckAndDeadline(t *testing.T) {
	for c, ok := range map[ReadyCheck]bool{"": true, "none": true, "phone-home": true, "tcp:22": true, "tcp:65535": true,
		"tcp:0": false, "tcp:65536": false, "tcp:022": false, "tcp:": false, "ssh": false, "tcp:22 ": false} {
		if c.Valid() != ok {
			t.Errorf("%q valid %v", c, c.Valid())
		}
	}
	if ReadyDefault.Effective(ModeCloudInit) != ReadyPhoneHome || ReadyDefault.Effective(ModeNone) != ReadyTCP22 || ReadyNone.Effective(ModeCloudInit) != ReadyNone {
		t.Error("effective ready checks")
	}
	for s, want := range map[string]time.Duration{"": 0, "45m": 45 * time.Minute, "48h": 48 * time.Hour} {
		if d, err := ParseFlashDeadline(s); err != nil || d != want {
			t.Errorf("%q: %v %v", s, d, err)
		}
	}
	for _, s := range []string{"30s", "49h", "soon", "-1h"} {
		if _, err := ParseFlashDeadline(s); !IsValidation(err) {
			t.Errorf("%q accepted", s)
		}
	}
}
