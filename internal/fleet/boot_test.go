package fleet

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	testMAC = MustParseMAC("52:54:00:12:34:56")
	t0      = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	t1      = t0.Add(time.Hour)
)

func tp(t time.Time) *time.Time { return &t }

func TestDecide(t *testing.T) {
	tests := []struct {
		name string
		m    Machine
		want Decision
	}{
		{"local", Machine{BootPolicy: PolicyLocal, Image: "a.img"}, Decision{Serve: PolicyLocal, Why: "local disk"}},
		{"unknown policy boots the disk", Machine{BootPolicy: "bogus"}, Decision{Serve: PolicyLocal, Why: "local disk"}},
		{"tui", Machine{BootPolicy: PolicyTUI}, Decision{Serve: PolicyTUI, Why: "interactive live env (tui)"}},
		{"flash", Machine{BootPolicy: PolicyFlash, Image: "a.img", NextBoot: NextFlash},
			Decision{Serve: PolicyFlash, Why: "flash a.img"}},
		{"flash, unset next boot", Machine{BootPolicy: PolicyFlash, Image: "a.img"},
			Decision{Serve: PolicyFlash, Why: "flash a.img"}},
		{"flash after done", Machine{BootPolicy: PolicyFlash, Image: "a.img", NextBoot: NextLocal},
			Decision{Serve: PolicyLocal, Why: "local disk once (flashed), then flash a.img"}},
		{"flash without image", Machine{MAC: testMAC, BootPolicy: PolicyFlash, NextBoot: NextFlash},
			Decision{Serve: PolicyLocal, Why: "local disk (flash policy, but no image assigned)",
				Note: "bty: 52:54:00:12:34:56 has boot policy flash but no image assigned, booting the local disk"}},
		{"flash without image after done", Machine{MAC: testMAC, BootPolicy: PolicyFlash, NextBoot: NextLocal},
			Decision{Serve: PolicyLocal, Why: "local disk (flash policy, but no image assigned)",
				Note: "bty: 52:54:00:12:34:56 has boot policy flash but no image assigned, booting the local disk"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, Decide(tt.m)); d != "" {
				t.Errorf("Decide (-want +got):\n%s", d)
			}
		})
	}
}

// TestContactCadence walks the per-job cadence of a flash machine: flash,
// done, the disk once, flash again; and what each contact records.
func TestContactCadence(t *testing.T) {
	type step struct {
		op        string // contact, done, failed
		wantServe Policy
		wantNext  NextBoot
		wantCycle bool // a live env call in the cycle is accepted after the step
		wantUpd   bool // UpdatedAt moved to this step's time
	}
	tests := []struct {
		name  string
		m     Machine
		steps []step
	}{
		{"flash per job", Machine{MAC: testMAC, BootPolicy: PolicyFlash, Image: "a.img", NextBoot: NextFlash}, []step{
			{op: "contact", wantServe: PolicyFlash, wantNext: NextFlash, wantCycle: true},
			{op: "done", wantNext: NextLocal, wantUpd: true},
			{op: "contact", wantServe: PolicyLocal, wantNext: NextFlash, wantUpd: true},
			{op: "contact", wantServe: PolicyFlash, wantNext: NextFlash, wantCycle: true},
			{op: "failed", wantNext: NextFlash, wantUpd: true},
			{op: "contact", wantServe: PolicyFlash, wantNext: NextFlash, wantCycle: true},
		}},
		{"local never moves next boot", Machine{MAC: testMAC, BootPolicy: PolicyLocal, NextBoot: NextFlash}, []step{
			{op: "contact", wantServe: PolicyLocal, wantNext: NextFlash},
			{op: "contact", wantServe: PolicyLocal, wantNext: NextFlash},
		}},
		{"tui", Machine{MAC: testMAC, BootPolicy: PolicyTUI, NextBoot: NextFlash}, []step{
			{op: "contact", wantServe: PolicyTUI, wantNext: NextFlash, wantCycle: true},
			{op: "done", wantNext: NextLocal, wantUpd: true},
		}},
		{"flash with no image boots the disk", Machine{MAC: testMAC, BootPolicy: PolicyFlash, NextBoot: NextFlash}, []step{
			{op: "contact", wantServe: PolicyLocal, wantNext: NextFlash},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.m
			var token string
			for i, s := range tt.steps {
				now := t0.Add(time.Duration(i+1) * time.Minute)
				switch s.op {
				case "contact":
					var d Decision
					tok := NewCycleToken()
					m, d = m.Contact(Visit{IP: "10.0.0.7", At: now, Token: tok})
					if d.Serve != s.wantServe || m.LastServed != s.wantServe {
						t.Fatalf("step %d: served %q (recorded %q), want %q", i, d.Serve, m.LastServed, s.wantServe)
					}
					live := d.Serve == PolicyFlash || d.Serve == PolicyTUI
					if live != (d.Cycle == tok) || live != (m.Cycle != nil) {
						t.Fatalf("step %d: served %q with cycle token %q (gave %q), record's cycle %+v", i, d.Serve, d.Cycle, tok, m.Cycle)
					}
					token = d.Cycle
					if m.LastSeenAt == nil || !m.LastSeenAt.Equal(now) || m.LastSeenIP != "10.0.0.7" {
						t.Fatalf("step %d: last seen %v %q", i, m.LastSeenAt, m.LastSeenIP)
					}
				case "done":
					m = m.Done(Progress{}, now)
					if m.LastFlashedAt == nil || !m.LastFlashedAt.Equal(now) {
						t.Fatalf("step %d: last flashed %v", i, m.LastFlashedAt)
					}
				case "failed":
					m = m.Failed("disk gone", now)
					if m.LastFailure != "disk gone" || !m.FailedSinceFlash() {
						t.Fatalf("step %d: failure %q, since flash %v", i, m.LastFailure, m.FailedSinceFlash())
					}
				}
				if m.NextBoot != s.wantNext {
					t.Fatalf("step %d (%s): next boot %q, want %q", i, s.op, m.NextBoot, s.wantNext)
				}
				if got := m.CheckCycle(token, "10.0.0.7", now) == nil; got != s.wantCycle {
					t.Fatalf("step %d (%s): call in the cycle accepted %v, want %v", i, s.op, got, s.wantCycle)
				}
				if got := m.UpdatedAt.Equal(now); got != s.wantUpd {
					t.Fatalf("step %d (%s): updated_at %v moved=%v, want moved=%v", i, s.op, m.UpdatedAt, got, s.wantUpd)
				}
			}
		})
	}
}

func TestDiscover(t *testing.T) {
	tok := NewCycleToken()
	m, d := Discover(testMAC, Visit{IP: "10.0.0.9", At: t0, Token: tok, TTL: time.Hour})
	want := Machine{MAC: testMAC, BootPolicy: PolicyTUI, NextBoot: NextFlash, DiscoveredAt: tp(t0), LastSeenAt: tp(t0),
		LastSeenIP: "10.0.0.9", CreatedAt: t0, UpdatedAt: t0, LastServed: PolicyTUI,
		Cycle: &Cycle{TokenHash: HashCycleToken(tok), IP: "10.0.0.9", StartedAt: t0, ExpiresAt: t1}}
	if diff := cmp.Diff(want, m, cmp.AllowUnexported(MAC{})); diff != "" {
		t.Errorf("Discover (-want +got):\n%s", diff)
	}
	if d.Serve != PolicyTUI || !m.Unassigned() || d.Cycle != tok {
		t.Errorf("served %q, unassigned %v, cycle token %q", d.Serve, m.Unassigned(), d.Cycle)
	}
	// Not recorded (no token): no cycle.
	if m, d := Discover(testMAC, Visit{IP: "10.0.0.9", At: t0}); m.Cycle != nil || d.Cycle != "" {
		t.Errorf("Discover without a token opened a cycle: %+v, %q", m.Cycle, d.Cycle)
	}
}

func TestApply(t *testing.T) {
	flash, local := PolicyFlash, PolicyLocal
	img, mode := "b.img", ModeCloudInit
	m := NewMachine(testMAC, MachineUpdate{Image: &img}, t0)
	if m.BootPolicy != PolicyLocal || m.NextBoot != NextFlash || m.Image != "b.img" || !m.CreatedAt.Equal(t0) {
		t.Fatalf("NewMachine: %+v", m)
	}
	m = m.Apply(MachineUpdate{BootPolicy: &flash, ProvisioningMode: &mode}, t1)
	m = m.Done(Progress{}, t1)
	if m.NextBoot != NextLocal || m.ProvisioningMode != ModeCloudInit {
		t.Fatalf("after done: %+v", m)
	}
	// The same policy again leaves next_boot alone ...
	if got := m.Apply(MachineUpdate{BootPolicy: &flash}, t1); got.NextBoot != NextLocal {
		t.Errorf("same policy reset next boot to %q", got.NextBoot)
	}
	// ... a change resets it, so a machine put back on flash reflashes.
	m = m.Apply(MachineUpdate{BootPolicy: &local}, t1).Apply(MachineUpdate{BootPolicy: &flash}, t1)
	if m.NextBoot != NextFlash || Decide(m).Serve != PolicyFlash {
		t.Errorf("policy changed: next boot %q, serve %q", m.NextBoot, Decide(m).Serve)
	}
}

func TestFailedCutsReason(t *testing.T) {
	m := Machine{}.Failed(strings.Repeat("é", MaxFailureLen+50), t0)
	if n := len([]rune(m.LastFailure)); n != MaxFailureLen {
		t.Errorf("reason kept %d characters, want %d", n, MaxFailureLen)
	}
}

func TestValidate(t *testing.T) {
	bad, badMode, good := Policy("reboot"), Mode("ansible"), PolicyTUI
	errs := MachineUpdate{BootPolicy: &bad, ProvisioningMode: &badMode}.Validate()
	if len(errs) != 2 || errs[0].Field != "boot_policy" || errs[1].Field != "provisioning_mode" ||
		!strings.Contains(errs[0].Msg, `"local", "flash", "tui"`) || !strings.Contains(errs[1].Msg, `"cijoe-online"`) {
		t.Errorf("Validate: %v", errs)
	}
	if errs := (MachineUpdate{BootPolicy: &good}).Validate(); errs != nil {
		t.Errorf("Validate(tui) = %v", errs)
	}
	if _, err := ParsePolicy("flash"); err != nil {
		t.Error(err)
	}
	if _, err := ParseMode("bogus"); !IsValidation(err) {
		t.Errorf("ParseMode(bogus) = %v", err)
	}
}

func TestModeInLiveEnv(t *testing.T) {
	tests := []struct {
		mode    Mode
		apply   Mode
		note    bool
		wantErr error
	}{
		{ModeUnset, ModeNone, false, nil},
		{ModeNone, ModeNone, false, nil},
		{ModeCloudInit, ModeCloudInit, false, nil},
		{ModeCijoeOnline, ModeCijoeOnline, true, nil},
		{ModeCijoe, "", false, ErrLiveEnvCijoe},
	}
	for _, tt := range tests {
		apply, note, err := tt.mode.InLiveEnv()
		if apply != tt.apply || (note != "") != tt.note || !errors.Is(err, tt.wantErr) {
			t.Errorf("%q.InLiveEnv() = %q, %q, %v", tt.mode, apply, note, err)
		}
	}
	if _, note, _ := ModeCijoeOnline.InLiveEnv(); !strings.Contains(note, "bty-web's SSH key") || !strings.Contains(note, "seeds cloud-init") {
		t.Errorf("cijoe-online's note %q does not say the live env seeds bty-web's SSH key through cloud-init", note)
	}
	if _, _, err := Mode("salt").InLiveEnv(); err == nil || !strings.Contains(err.Error(), "cijoe-online") {
		t.Errorf("unknown mode: %v", err)
	}
	for _, m := range Modes {
		if !m.Valid() {
			t.Errorf("%q in Modes but not Valid", m)
		}
	}
	if !ModeCijoeOnline.OnServer() || ModeCijoe.OnServer() || ModeUnset.Effective() != ModeNone {
		t.Error("OnServer/Effective")
	}
}

func TestForImport(t *testing.T) {
	m, err := Machine{MAC: testMAC, BootPolicy: PolicyFlash}.ForImport(t0)
	if err != nil || m.NextBoot != NextFlash || !m.CreatedAt.Equal(t0) || !m.UpdatedAt.Equal(t0) {
		t.Fatalf("ForImport: %+v, %v", m, err)
	}
	st := WorkflowStatus("maybe")
	for _, bad := range []Machine{
		{BootPolicy: PolicyFlash},
		{MAC: testMAC, BootPolicy: "nope"},
		{MAC: testMAC, BootPolicy: PolicyLocal, ProvisioningMode: "puppet"},
		{MAC: testMAC, BootPolicy: PolicyLocal, LastWorkflowStatus: &st},
		{MAC: testMAC, BootPolicy: PolicyLocal, CijoeWorkflowRef: strings.Repeat("w", MaxWorkflowRefBytes+1)},
		{MAC: testMAC, BootPolicy: PolicyLocal, UserData: strings.Repeat("u", MaxSeedBytes+1)},
		{MAC: testMAC, BootPolicy: PolicyLocal, LastSeenIP: "10.0.0.1\nx"},
		{MAC: testMAC, BootPolicy: PolicyLocal, LastWorkflowOutputPath: strings.Repeat("p", MaxRecordedBytes+1)},
	} {
		if _, err := bad.ForImport(t0); !IsValidation(err) {
			t.Errorf("ForImport(%.200v) = %v, want a validation error", bad, err)
		}
	}
	if m, err := (Machine{MAC: testMAC, BootPolicy: PolicyLocal, LastFailure: strings.Repeat("é", MaxFailureLen+1)}).ForImport(t0); err != nil ||
		len([]rune(m.LastFailure)) != MaxFailureLen {
		t.Errorf("ForImport cuts last_failure: %d characters, %v", len([]rune(m.LastFailure)), err)
	}
}
