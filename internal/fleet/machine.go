package fleet

import "time"

// Machine is one machine's record; its JSON is the wire shape of
// docs/reference.md, "Machine" (times in RFC 3339, null when unset).
type Machine struct {
	MAC              MAC    `json:"mac"`
	Image            string `json:"image"`
	ProvisioningMode Mode   `json:"provisioning_mode"`
	Hostname         string `json:"hostname"`
	// CijoeWorkflowRef names the workflow cijoe-online runs; the
	// LastWorkflow* fields are its last run. Nothing runs workflows yet
	// (docs/reference.md, "Provisioning"): they are kept and exported
	// so records survive the feature's arrival.
	CijoeWorkflowRef       string          `json:"cijoe_workflow_ref"`
	LastKnownGood          string          `json:"last_known_good"`
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
}

// MaxSeedBytes caps user_data and meta_data each: they live in the
// state database and are sent on every flash.
const MaxSeedBytes = 1 << 20

// MaxFailureLen caps a failure reason, in characters; longer ones are
// cut.
const MaxFailureLen = 2000

// Redacted is m without its cloud-init seed, for answers on open routes.
func (m Machine) Redacted() Machine {
	m.UserData, m.MetaData = "", ""
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
	LastKnownGood    *string `json:"last_known_good"`
	BootPolicy       *Policy `json:"boot_policy"`
	UserData         *string `json:"user_data"`
	MetaData         *string `json:"meta_data"`
}

// Validate checks the enumerated fields of u: one *ValidationError per
// bad field, in field order (nil when all are good).
func (u MachineUpdate) Validate() []*ValidationError {
	var errs []*ValidationError
	if u.BootPolicy != nil && !u.BootPolicy.Valid() {
		errs = append(errs, oneOfError("boot_policy", string(*u.BootPolicy), Policies))
	}
	if u.ProvisioningMode != nil && !u.ProvisioningMode.Valid() {
		errs = append(errs, oneOfError("provisioning_mode", string(*u.ProvisioningMode), Modes))
	}
	return errs
}

// IsEmpty reports whether u sets nothing.
func (u MachineUpdate) IsEmpty() bool { return u == MachineUpdate{} }
