package fleet

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Decision is what one PXE contact is served, and why.
type Decision struct {
	// Serve is the script the contact gets: PolicyLocal, PolicyFlash or
	// PolicyTUI.
	Serve Policy
	// Why says it in words for the UI and bty-ctl ("flash debian.img",
	// "local disk once (flashed), then flash debian.img").
	Why string
	// Note, when set, is said on the machine's console: the policy asks
	// for something the record cannot give (a flash with no image).
	Note string
	// Cycle is the token of the flash cycle this contact opened, for
	// the script's kernel command line (bty.cycle); "" when none.
	Cycle string
	// Conflict is set when the contact came from another address than
	// the machine's open flash cycle (Machine.Conflicting).
	Conflict bool
}

// Decide is the one rule for what a machine's next PXE contact is
// served (docs/reference.md, "Boot policies"):
//
//   - local: the local disk;
//   - tui: the interactive live env;
//   - flash with no image assigned: the local disk, with a console note
//     saying why (nothing to flash; never wipe a disk with nothing);
//   - flash after a done (NextBoot local): the local disk, once;
//   - flash otherwise: the live env flashing the assigned image.
//
// It is a pure function of the record; Machine.Contact applies it.
//
// A demand flash (Machine.Reflash) that has not reported yet comes
// first: the live env flashing its image, whatever the policy.
func Decide(m Machine) Decision {
	if f := m.Flash; f.awaitingPXE() {
		return Decision{Serve: PolicyFlash, Why: fmt.Sprintf("flash %s (reflash %d requested)", f.Image, f.ID)}
	}
	switch m.BootPolicy {
	case PolicyFlash:
		switch {
		case m.Image == "":
			return Decision{Serve: PolicyLocal, Why: "local disk (flash policy, but no image assigned)",
				Note: "bty: " + m.MAC.String() + " has boot policy flash but no image assigned, booting the local disk"}
		case m.NextBoot == NextLocal:
			return Decision{Serve: PolicyLocal, Why: "local disk once (flashed), then flash " + m.Image}
		default:
			return Decision{Serve: PolicyFlash, Why: "flash " + m.Image}
		}
	case PolicyTUI:
		return Decision{Serve: PolicyTUI, Why: "interactive live env (tui)"}
	default:
		return Decision{Serve: PolicyLocal, Why: "local disk"}
	}
}

// Discover is the record an unknown MAC's first PXE contact v creates:
// boot policy tui (the interactive live env, where an operator can
// pick an image), discovered now, served tui in a new flash cycle.
func Discover(mac MAC, v Visit) (Machine, Decision) {
	now := v.At.UTC()
	m := Machine{MAC: mac, BootPolicy: PolicyTUI, NextBoot: NextFlash,
		DiscoveredAt: &now, LastSeenAt: &now, LastSeenIP: v.IP, CreatedAt: now, UpdatedAt: now}
	d := Decide(m)
	m.LastServed = d.Serve
	return m.open(v, d)
}

// Contact is m after the PXE contact v, and what the contact is served
// (Decide). A flash machine booting its disk once has its NextBoot
// turned back to flash, so the contact after reflashes. A contact served
// the live env opens a new flash cycle bound to v.IP; any earlier one
// ends. last_seen_* change on every contact; UpdatedAt only when the
// contact changes the record's state (NextBoot), so it keeps meaning
// "last changed" rather than "last booted".
//
// A contact from another address than an open cycle's (Conflicting)
// changes none of that: it is served the local disk and only recorded
// as a conflict (last_conflict_*), so a stranger sending the MAC can
// neither take over the cycle nor use up the boot-the-disk-once turn.
func (m Machine) Contact(v Visit) (Machine, Decision) {
	if m.Conflicting(v) {
		return m.conflict(v)
	}
	now := v.At.UTC()
	d := Decide(m)
	if m.BootPolicy == PolicyFlash && m.NextBoot == NextLocal {
		m.NextBoot = NextFlash
		m.UpdatedAt = now
	}
	m.LastSeenAt, m.LastServed = &now, d.Serve
	if !v.DHCP {
		m.LastSeenIP = v.IP
	}
	m = m.contactFlash(v, d)
	return m.open(v, d)
}

// Done is m after the live env reported a finished flash at now, with
// its totals p: the next contact boots the disk once, and the flash
// waits for its ready check (or is ready: ReadyNone). The boot policy
// never changes.
func (m Machine) Done(p Progress, now time.Time) Machine {
	m = m.flashDone(p, now)
	now = now.UTC()
	m.LastFlashedAt, m.NextBoot, m.UpdatedAt = &now, NextLocal, now
	return m
}

// Failed is m after the live env reported a failed flash at now, with
// its reason cut to MaxFailureLen characters. The boot policy and
// NextBoot are left as they are, so a flash machine retries on its
// next boot.
func (m Machine) Failed(reason string, now time.Time) Machine {
	now = now.UTC()
	if utf8.RuneCountInString(reason) > MaxFailureLen {
		reason = string([]rune(reason)[:MaxFailureLen])
	}
	m = m.flashFailed(reason, now)
	m.LastFailedAt, m.LastFailure, m.UpdatedAt = &now, reason, now
	return m
}

// NewMachine is the record an operator's first PUT creates: boot policy
// local unless u says otherwise, u's fields applied.
func NewMachine(mac MAC, u MachineUpdate, now time.Time) Machine {
	now = now.UTC()
	m := Machine{MAC: mac, BootPolicy: PolicyLocal, NextBoot: NextFlash, CreatedAt: now, UpdatedAt: now}
	m.set(u)
	return m
}

// Apply is m with u's fields set at now. Changing the boot policy
// resets NextBoot to flash, so a machine put (back) on flash reflashes
// on its next contact; setting the same policy again leaves it alone.
// u must have passed Validate.
func (m Machine) Apply(u MachineUpdate, now time.Time) Machine {
	if u.BootPolicy != nil && *u.BootPolicy != m.BootPolicy {
		m.NextBoot = NextFlash
	}
	m.set(u)
	m.UpdatedAt = now.UTC()
	return m
}

func (m *Machine) set(u MachineUpdate) {
	setField(&m.Image, u.Image)
	setField(&m.Hostname, u.Hostname)
	setField(&m.CijoeWorkflowRef, u.CijoeWorkflowRef)
	setField(&m.UserData, u.UserData)
	setField(&m.MetaData, u.MetaData)
	setField(&m.ProvisioningMode, u.ProvisioningMode)
	setField(&m.BootPolicy, u.BootPolicy)
	setField(&m.ReadyCheck, u.ReadyCheck)
	setField(&m.FlashDeadline, u.FlashDeadline)
	setField(&m.CijoeSSHUser, u.CijoeSSHUser)
	setField(&m.CijoeSSHPort, u.CijoeSSHPort)
	setField(&m.CijoeTimeout, u.CijoeTimeout)
	setField(&m.HealthEvery, u.HealthEvery)
	setField(&m.HealthFailAfter, u.HealthFailAfter)
	if u.Labels != nil {
		m.Labels = u.Labels.Apply(m.Labels)
	}
	if u.Power != nil {
		m.Power = u.Power.Apply(m.Power)
	}
}

// Settable is the MachineUpdate that would set every settable field of
// m to its value: how an imported record is checked like PUT /machines.
func (m Machine) Settable() MachineUpdate {
	image, mode, host, ref, policy, ud, md := m.Image, m.ProvisioningMode, m.Hostname, m.CijoeWorkflowRef,
		m.BootPolicy, m.UserData, m.MetaData
	rc, fd, su, sp, ct := m.ReadyCheck, m.FlashDeadline, m.CijoeSSHUser, m.CijoeSSHPort, m.CijoeTimeout
	he, hf := m.HealthEvery, m.HealthFailAfter
	var labels LabelUpdate
	for k, v := range m.Labels {
		if labels == nil {
			labels = LabelUpdate{}
		}
		labels[k] = &v
	}
	return MachineUpdate{Image: &image, ProvisioningMode: &mode, Hostname: &host, CijoeWorkflowRef: &ref,
		BootPolicy: &policy, UserData: &ud, MetaData: &md, ReadyCheck: &rc, FlashDeadline: &fd,
		CijoeSSHUser: &su, CijoeSSHPort: &sp, CijoeTimeout: &ct, Labels: labels, HealthEvery: &he, HealthFailAfter: &hf}
}

// MaxRecordedBytes bounds the strings of a record the server writes
// itself (last_seen_ip, last_workflow_output_path) when an import
// brings them.
const MaxRecordedBytes = 4096

// ForImport checks a whole record being restored from an export and
// fills what older exports lack: a bad MAC, a settable field Validate
// refuses, an over-long or multi-line last_seen_ip, last_conflict_ip or
// last_workflow_output_path, or a bad workflow status is a
// *ValidationError naming the machine; a last_failure is cut to
// MaxFailureLen characters, as Failed cuts it; a missing NextBoot is
// flash, a missing CreatedAt is now, a missing UpdatedAt CreatedAt.
// Finer checks of the settable fields (names, host names, seeds) are
// the caller's, as for MachineUpdate.Validate.
func (m Machine) ForImport(now time.Time) (Machine, error) {
	if m.MAC.IsZero() {
		return Machine{}, &ValidationError{Field: "mac", Msg: "a machine has no MAC"}
	}
	if errs := m.Settable().Validate(); len(errs) > 0 {
		return Machine{}, &ValidationError{Field: m.MAC.String(), Msg: errs[0].Error()}
	}
	for _, f := range []struct{ field, v string }{{"last_seen_ip", m.LastSeenIP}, {"last_conflict_ip", m.LastConflictIP},
		{"last_workflow_output_path", m.LastWorkflowOutputPath}} {
		if e := maxBytes(f.field, &f.v, MaxRecordedBytes, ""); e != nil {
			return Machine{}, &ValidationError{Field: m.MAC.String(), Msg: e.Error()}
		}
		if strings.ContainsAny(f.v, "\x00\r\n") {
			return Machine{}, &ValidationError{Field: m.MAC.String(), Msg: f.field + ": must be one line"}
		}
	}
	if utf8.RuneCountInString(m.LastFailure) > MaxFailureLen {
		m.LastFailure = string([]rune(m.LastFailure)[:MaxFailureLen])
	}
	if m.NextBoot != NextFlash && m.NextBoot != NextLocal {
		m.NextBoot = NextFlash
	}
	if k := m.LastKnownGood; k.IsZero() {
		m.LastKnownGood = nil
	} else if err := k.check(); err != nil {
		return Machine{}, &ValidationError{Field: m.MAC.String(), Msg: "last_known_good: " + err.Error()}
	}
	if m.LastWorkflowStatus != nil && !m.LastWorkflowStatus.Valid() {
		return Machine{}, &ValidationError{Field: m.MAC.String(), Msg: "last_workflow_status must be running, success, failed or null"}
	}
	// A cycle's token hash is never exported: a restored record has no
	// open cycle, and its next contact opens one. Flashes are history
	// of the database they ran in: a restored record has none running.
	m.Cycle, m.Flash, m.Drift = nil, nil, nil
	// An inventory is checked as the open route checks it; the derived
	// labels are worked out from it again, never taken as exported.
	if m.Inventory != nil {
		if err := m.Inventory.Check(); err != nil {
			return Machine{}, &ValidationError{Field: m.MAC.String(), Msg: "inventory: " + err.Error()}
		}
	}
	m.DerivedLabels = m.Inventory.DerivedLabels()
	if m.CreatedAt.IsZero() {
		m.CreatedAt = now.UTC()
	}
	if m.UpdatedAt.IsZero() {
		m.UpdatedAt = m.CreatedAt
	}
	return m, nil
}
