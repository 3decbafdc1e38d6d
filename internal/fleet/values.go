package fleet

import (
	"errors"
	"fmt"
	"strings"
)

// Policy is a machine's boot policy: what its PXE contacts get
// (docs/reference.md, "Boot policies"). It is also what one contact was
// served (Decision.Serve, Machine.LastServed).
type Policy string

// The boot policies.
const (
	PolicyLocal Policy = "local" // boot the local disk
	PolicyFlash Policy = "flash" // chain the live env and reflash the assigned image
	PolicyTUI   Policy = "tui"   // chain the live env in interactive mode
)

// Policies are the boot policies, in the order messages and menus list
// them.
var Policies = []Policy{PolicyLocal, PolicyFlash, PolicyTUI}

// Valid reports whether p is one of Policies.
func (p Policy) Valid() bool { return p == PolicyLocal || p == PolicyFlash || p == PolicyTUI }

// ParsePolicy returns s as a Policy, or a *ValidationError for
// boot_policy listing the accepted values.
func ParsePolicy(s string) (Policy, error) {
	p := Policy(s)
	if !p.Valid() {
		return "", oneOfError("boot_policy", s, Policies)
	}
	return p, nil
}

// Mode is a provisioning mode: what tunes a freshly flashed disk's first
// boot (docs/reference.md, "Provisioning").
type Mode string

// The provisioning modes. ModeUnset, a record's default, means none.
const (
	ModeUnset       Mode = ""
	ModeNone        Mode = "none"
	ModeCloudInit   Mode = "cloud-init"   // seed cloud-init's NoCloud datasource on the flashed disk
	ModeCijoe       Mode = "cijoe"        // run a cijoe workflow against the flashed root filesystem, offline
	ModeCijoeOnline Mode = "cijoe-online" // bty-web runs a cijoe workflow once the flashed OS is up
)

// Modes are the modes a machine record accepts, in the order messages
// and menus list them (ModeUnset first: a record may leave it unset).
var Modes = []Mode{ModeUnset, ModeNone, ModeCloudInit, ModeCijoe, ModeCijoeOnline}

// FlashModes are the modes bty flash (the CLI and the TUI) applies
// itself.
var FlashModes = []Mode{ModeNone, ModeCloudInit, ModeCijoe}

// Valid reports whether m is one of Modes.
func (m Mode) Valid() bool {
	switch m {
	case ModeUnset, ModeNone, ModeCloudInit, ModeCijoe, ModeCijoeOnline:
		return true
	}
	return false
}

// ParseMode returns s as a Mode, or a *ValidationError for
// provisioning_mode listing the accepted values.
func ParseMode(s string) (Mode, error) {
	m := Mode(s)
	if !m.Valid() {
		return "", oneOfError("provisioning_mode", s, Modes)
	}
	return m, nil
}

// Effective is m with ModeUnset read as ModeNone.
func (m Mode) Effective() Mode {
	if m == ModeUnset {
		return ModeNone
	}
	return m
}

// OnServer reports whether the mode's work happens on bty-web after the
// flashed OS boots, not on the flashed disk (cijoe-online).
func (m Mode) OnServer() bool { return m == ModeCijoeOnline }

// ErrLiveEnvCijoe: the PXE live env cannot run provisioning cijoe.
var ErrLiveEnvCijoe = errors.New("provisioning cijoe runs a workflow against the flashed disk, which the PXE live env cannot (it carries no cijoe and no workflow file): " +
	"set the machine's provisioning to cloud-init (with user-data on its record), cijoe-online or none")

// InLiveEnv is what the PXE live env does with a record's mode: the mode
// it applies to the flashed disk, and a note when that is more than m
// says. cijoe-online stays cijoe-online: the live env seeds cloud-init,
// when the image has it, with bty-web's SSH key (bty.ssh_key=) so that
// bty-web can run the workflow once the flashed OS is up, and flashes
// on without the seed when the image has no cloud-init; cijoe cannot
// run there (ErrLiveEnvCijoe); an unknown mode is an error naming the
// ones the live env knows.
func (m Mode) InLiveEnv() (apply Mode, note string, err error) {
	switch m {
	case ModeUnset, ModeNone:
		return ModeNone, "", nil
	case ModeCloudInit:
		return ModeCloudInit, "", nil
	case ModeCijoeOnline:
		return ModeCijoeOnline, "provisioning cijoe-online: the live env seeds cloud-init (when the image has it) with bty-web's SSH key; bty-web runs the workflow once the flashed OS is up", nil
	case ModeCijoe:
		return "", "", ErrLiveEnvCijoe
	}
	return "", "", errors.New("not a provisioning mode the live env knows: none, cloud-init or cijoe-online")
}

// NextBoot is what the next PXE contact of a flash-policy machine gets:
// after a done the disk boots once (NextLocal), the contact after that
// reflashes (NextFlash).
type NextBoot string

// The next-boot states.
const (
	NextFlash NextBoot = "flash"
	NextLocal NextBoot = "local"
)

// WorkflowStatus is the state of a machine's last cijoe-online run.
type WorkflowStatus string

// The workflow statuses.
const (
	WorkflowRunning WorkflowStatus = "running"
	WorkflowSuccess WorkflowStatus = "success"
	WorkflowFailed  WorkflowStatus = "failed"
)

// Valid reports whether s is one of the workflow statuses.
func (s WorkflowStatus) Valid() bool {
	return s == WorkflowRunning || s == WorkflowSuccess || s == WorkflowFailed
}

// ValidationError is a value a caller sent that the fleet refuses: an
// unknown boot policy or provisioning mode, a malformed MAC. The HTTP
// layer answers it with 400 and Error() as the message; a form shows Msg
// next to Field.
type ValidationError struct {
	Field string // the wire name of the field, e.g. "boot_policy"
	Msg   string // what is wrong and what is accepted
}

func (e *ValidationError) Error() string {
	if strings.HasPrefix(e.Msg, e.Field) {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// IsValidation reports whether err is (or wraps) a *ValidationError.
func IsValidation(err error) bool {
	var v *ValidationError
	return errors.As(err, &v)
}

func oneOfError[T ~string](field, v string, allowed []T) *ValidationError {
	q := make([]string, len(allowed))
	for i, a := range allowed {
		q[i] = fmt.Sprintf("%q", string(a))
	}
	return &ValidationError{Field: field, Msg: fmt.Sprintf("%q is not one of %s", v, strings.Join(q, ", "))}
}
