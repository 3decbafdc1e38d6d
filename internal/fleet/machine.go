package fleet

import (
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
)

// Machine is one machine's record; its JSON is the wire shape of
// docs/reference.md, "Machine" (times in RFC 3339, null when unset).
type Machine struct {
	MAC              MAC    `json:"mac"`
	Image            string `json:"image"`
	ProvisioningMode Mode   `json:"provisioning_mode"`
	Hostname         string `json:"hostname"`
	// CijoeWorkflowRef names the workflow (GET /workflows) cijoe-online
	// runs; the LastWorkflow* fields are its last run (docs/reference.md,
	// "cijoe-online"); LastKnownGood is the baseline its last
	// successful run recorded (null before one).
	CijoeWorkflowRef       string          `json:"cijoe_workflow_ref"`
	LastKnownGood          *KnownGood      `json:"last_known_good"`
	DiscoveredAt           *time.Time      `json:"discovered_at"`
	LastSeenAt             *time.Time      `json:"last_seen_at"`
	LastSeenIP             string          `json:"last_seen_ip"`
	BootPolicy             Policy          `json:"boot_policy"`
	LastFlashedAt          *time.Time      `json:"last_flashed_at"`
	LastWorkflowRunAt      *time.Time      `json:"last_workflow_run_at"`
	LastWorkflowStatus     *WorkflowStatus `json:"last_workflow_status"`
	LastWorkflowOutputPath string          `json:"last_workflow_output_path"`
	CreatedAt              time.Time       `json:"created_at"`
	UpdatedAt              time.Time       `json:"updated_at"`
	// NextBoot is what the next PXE contact of a flash-policy machine
	// gets (see Decide).
	NextBoot NextBoot `json:"next_boot"`
	// LastFailedAt and LastFailure are the live env's last failure report
	// (POST /pxe/{mac}/failed): when, and why in its own words.
	LastFailedAt *time.Time `json:"last_failed_at"`
	LastFailure  string     `json:"last_failure"`
	// UserData and MetaData are the machine's cloud-init seed, which the
	// live env fetches (GET /pxe/{mac}/user-data, meta-data) during a
	// flash cycle. Secrets may be in them: only authenticated callers
	// see them (Redacted strips them for the open routes).
	UserData string `json:"user_data"`
	MetaData string `json:"meta_data"`
	// LastServed is what the last PXE contact was served (local, flash,
	// tui; "" before the first contact).
	LastServed Policy `json:"last_served"`
	// Cycle is the machine's flash cycle (null when none): the address
	// it is bound to, when it started and expires, and whether the seed
	// was released (see Cycle).
	Cycle *Cycle `json:"cycle"`
	// LastConflictAt and LastConflictIP are the last PXE contact for this
	// MAC from another address than its open flash cycle's: someone else
	// sent the machine's MAC, or the machine's address changed mid-cycle.
	LastConflictAt *time.Time `json:"last_conflict_at"`
	LastConflictIP string     `json:"last_conflict_ip"`
	// Power is how bty-web reaches the machine's BMC (null: it cannot
	// power the machine; it must be rebooted by other means).
	Power *Power `json:"power"`
	// ReadyCheck says when a flashed machine is ready ("" the default:
	// see ReadyCheck.Effective); FlashDeadline how long a flash may take
	// to ready ("" the server's default).
	ReadyCheck    ReadyCheck `json:"ready_check"`
	FlashDeadline string     `json:"flash_deadline"`
	// CijoeSSHUser and CijoeSSHPort are the login and port a run uses
	// ("" and 0: see SSHUser and SSHPort); CijoeTimeout bounds a run
	// ("" DefaultWorkflowTimeout).
	CijoeSSHUser string `json:"cijoe_ssh_user"`
	CijoeSSHPort int    `json:"cijoe_ssh_port"`
	CijoeTimeout string `json:"cijoe_timeout"`
	// Labels are the machine's key=value labels (null: none).
	Labels Labels `json:"labels"`
	// DerivedLabels are the labels derived from Inventory
	// (Inventory.DerivedLabels; null: none), worked out again whenever
	// the record is read or written, never set by hand; a selector
	// matches them and Labels, Labels winning on a key clash
	// (AllLabels). Inventory is the hardware the live env last reported
	// (docs/reference.md, "Inventory"), InventoryAt when (null before
	// the first report).
	DerivedLabels Labels     `json:"derived_labels"`
	Inventory     *Inventory `json:"inventory"`
	InventoryAt   *time.Time `json:"inventory_at"`
	// HealthEvery is how often bty-web checks the machine while its OS
	// runs ("" never: no health watch, no automatic recovery from a
	// failing check); HealthFailAfter how long the check must fail
	// before recovery starts ("" DefaultHealthFailAfter). Health is the
	// last check's state, Recovery the recovery in progress, Quarantine
	// set when recovery gave up (null: none). See docs/reference.md,
	// "Failure recovery".
	HealthEvery     string      `json:"health_every"`
	HealthFailAfter string      `json:"health_fail_after"`
	Health          *Health     `json:"health"`
	Recovery        *Recovery   `json:"recovery"`
	Quarantine      *Quarantine `json:"quarantine"`
	// Drift is how the record differs from LastKnownGood (DriftFrom),
	// worked out by bty-web when it answers (GET /machines/{mac});
	// never stored.
	Drift []DriftItem `json:"drift,omitempty"`
	// Flash is the machine's latest flash (null before the first).
	Flash *Flash `json:"flash"`
	// Replaced is a flash that ended because a contact started a new
	// one (Flash): the store writes it to the history with Flash. Never
	// on the wire or stored on the record.
	Replaced *Flash `json:"-"`
}

// MaxSeedBytes caps user_data and meta_data each: they live in the
// state database and are sent on every flash.
const MaxSeedBytes = 1 << 20

// MaxFailureLen caps a failure reason, in characters; longer ones are
// cut.
const MaxFailureLen = 2000

// Listed is m as lists and event streams carry it: without its
// inventory (tens of kilobytes on a large server; GET /machines/{mac}
// has it), its inventory_at and derived labels kept.
func (m Machine) Listed() Machine {
	m.Inventory = nil
	return m
}

// Redacted is m without its cloud-init seed (nor its baseline's), for
// answers on open routes.
func (m Machine) Redacted() Machine {
	m.UserData, m.MetaData = "", ""
	if m.LastKnownGood != nil {
		k := *m.LastKnownGood
		k.UserData, k.MetaData = "", ""
		m.LastKnownGood = &k
	}
	return m
}

// Unassigned reports whether the machine registered itself by
// PXE-booting and has no image assigned yet.
func (m Machine) Unassigned() bool { return m.DiscoveredAt != nil && m.Image == "" }

// FailedSinceFlash reports whether the last report is a failure newer
// than the last done.
func (m Machine) FailedSinceFlash() bool {
	return m.LastFailedAt != nil && (m.LastFlashedAt == nil || m.LastFailedAt.After(*m.LastFlashedAt))
}

// MachineUpdate is the settable part of a machine (PUT /machines/{mac});
// nil fields are left as they are (on create: defaults).
type MachineUpdate struct {
	Image            *string `json:"image"`
	ProvisioningMode *Mode   `json:"provisioning_mode"`
	Hostname         *string `json:"hostname"`
	CijoeWorkflowRef *string `json:"cijoe_workflow_ref"`
	BootPolicy       *Policy `json:"boot_policy"`
	UserData         *string `json:"user_data"`
	MetaData         *string `json:"meta_data"`
	// Power changes the machine's power control (see PowerUpdate).
	Power *PowerUpdate `json:"power"`
	// ReadyCheck and FlashDeadline: see Machine.
	ReadyCheck    *ReadyCheck `json:"ready_check"`
	FlashDeadline *string     `json:"flash_deadline"`
	// CijoeSSHUser, CijoeSSHPort and CijoeTimeout: see Machine.
	CijoeSSHUser *string `json:"cijoe_ssh_user"`
	CijoeSSHPort *int    `json:"cijoe_ssh_port"`
	CijoeTimeout *string `json:"cijoe_timeout"`
	// Labels changes the labels as a merge patch (LabelUpdate).
	Labels LabelUpdate `json:"labels"`
	// HealthEvery and HealthFailAfter: see Machine.
	HealthEvery     *string `json:"health_every"`
	HealthFailAfter *string `json:"health_fail_after"`
}

// The bounds of the settable string fields (besides MaxSeedBytes for
// user_data and meta_data). Names are one path element of a file
// system, where 255 bytes is the usual limit; RFC 1123 caps a host name
// at 253; a workflow reference is a path or a name, never a workflow.
const (
	MaxNameBytes        = 255
	MaxHostnameBytes    = 253
	MaxWorkflowRefBytes = 1024
)

// Validate checks what u's fields need no other package for: the
// enumerated fields (boot policy, provisioning mode) and the bounds of
// the strings (MaxNameBytes, MaxHostnameBytes, MaxWorkflowRefBytes and
// one line, MaxSeedBytes). It returns one *ValidationError per bad
// field, the enumerated ones first, then the strings in field order
// (nil when all are good). Finer checks (a name's characters, a host
// name's labels, a seed's YAML) are the caller's: bty-web's PUT
// /machines and POST /state/import make them.
func (u MachineUpdate) Validate() []*ValidationError {
	var errs []*ValidationError
	add := func(e *ValidationError) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	if u.BootPolicy != nil && !u.BootPolicy.Valid() {
		add(oneOfError("boot_policy", string(*u.BootPolicy), Policies))
	}
	if u.ProvisioningMode != nil && !u.ProvisioningMode.Valid() {
		add(oneOfError("provisioning_mode", string(*u.ProvisioningMode), Modes))
	}
	if u.ReadyCheck != nil && !u.ReadyCheck.Valid() {
		add(&ValidationError{Field: "ready_check", Msg: fmt.Sprintf("%q: want phone-home, tcp:PORT (1-65535), none, or empty for the default (phone-home in cloud-init mode, else tcp:22)", truncate(string(*u.ReadyCheck), 64))})
	}
	if u.FlashDeadline != nil {
		if len(*u.FlashDeadline) > 64 {
			add(&ValidationError{Field: "flash_deadline", Msg: "is too long: give a duration like 45m or 2h"})
		} else if _, err := ParseFlashDeadline(*u.FlashDeadline); err != nil {
			add(err.(*ValidationError))
		}
	}
	add(maxBytes("image", u.Image, MaxNameBytes, "use a name from GET /images"))
	add(maxBytes("hostname", u.Hostname, MaxHostnameBytes, "RFC 1123 caps a host name at 253"))
	if e := maxBytes("cijoe_workflow_ref", u.CijoeWorkflowRef, MaxWorkflowRefBytes, "give the workflow's path or name, not its contents"); e != nil {
		add(e)
	} else if u.CijoeWorkflowRef != nil && strings.ContainsAny(*u.CijoeWorkflowRef, "\x00\r\n") {
		add(&ValidationError{Field: "cijoe_workflow_ref", Msg: "must be one line (no line break or NUL): give the workflow's path or name"})
	}
	if u.CijoeSSHUser != nil && !validUser(*u.CijoeSSHUser) {
		add(&ValidationError{Field: "cijoe_ssh_user", Msg: fmt.Sprintf("%q: give a login name of letters, digits, '.', '_' and '-' (at most 32), or empty for the image's default user", truncate(*u.CijoeSSHUser, 64))})
	}
	if u.CijoeSSHPort != nil && (*u.CijoeSSHPort < 0 || *u.CijoeSSHPort > 65535) {
		add(&ValidationError{Field: "cijoe_ssh_port", Msg: fmt.Sprintf("%d: give a TCP port 1-65535, or 0 for 22", *u.CijoeSSHPort)})
	}
	if u.CijoeTimeout != nil {
		if _, err := ParseWorkflowTimeout(*u.CijoeTimeout); err != nil {
			add(err.(*ValidationError))
		}
	}
	if u.Labels != nil {
		add(u.Labels.validate())
	}
	if u.HealthEvery != nil {
		if _, err := ParseHealthEvery(*u.HealthEvery); err != nil {
			add(err.(*ValidationError))
		}
	}
	if u.HealthFailAfter != nil {
		if _, err := ParseHealthFailAfter(*u.HealthFailAfter); err != nil {
			add(err.(*ValidationError))
		}
	}
	add(maxBytes("user_data", u.UserData, MaxSeedBytes, ""))
	add(maxBytes("meta_data", u.MetaData, MaxSeedBytes, ""))
	return errs
}

// maxBytes is the *ValidationError for a field longer than limit bytes
// (nil when it is not), with what to do.
// truncate is s cut to at most n bytes (on a rune boundary), with "…"
// when cut: for quoting input in a message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func maxBytes(field string, v *string, limit int, todo string) *ValidationError {
	if v == nil || len(*v) <= limit {
		return nil
	}
	msg := fmt.Sprintf("is %d bytes; the limit is %d", len(*v), limit)
	if todo != "" {
		msg += ": " + todo
	}
	return &ValidationError{Field: field, Msg: msg}
}

// IsEmpty reports whether u sets nothing.
func (u MachineUpdate) IsEmpty() bool {
	v := reflect.ValueOf(u)
	for i := range v.NumField() {
		f := v.Field(i)
		if f.Kind() == reflect.Map && f.Len() == 0 {
			continue
		}
		if !f.IsZero() {
			return false
		}
	}
	return true
}
