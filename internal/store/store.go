// Package store keeps bty-web's fleet state: machines, sessions and
// settings. Callers use the Store interface; store/sqlitestore (embedded
// SQLite, the default) implements it, and a PostgreSQL implementation can
// be added beside it without changing callers. This package holds only
// the types, MAC normalisation and validation, so clients (bty-ctl, the
// TUI, the live env) can use them without linking a database.
package store

import (
	"context"
	"errors"
	"time"
)

// Boot policies (docs/reference.md, "Boot policies").
const (
	PolicyLocal = "local"
	PolicyFlash = "flash"
	PolicyTUI   = "tui"
)

// Next boot actions of a machine whose policy is flash: after a done, the
// next PXE contact boots the disk once, the one after that reflashes.
const (
	NextFlash = "flash"
	NextLocal = "local"
)

// Workflow statuses.
const (
	WorkflowRunning = "running"
	WorkflowSuccess = "success"
	WorkflowFailed  = "failed"
)

var (
	// ErrNotFound: no such machine (or setting).
	ErrNotFound = errors.New("not found")
)

// Machine is one machine record; its JSON is the wire shape of
// docs/reference.md, "Machine"
// (times in RFC 3339, null when unset).
type Machine struct {
	MAC                    string     `json:"mac"`
	Image                  string     `json:"image"`
	ProvisioningMode       string     `json:"provisioning_mode"`
	Hostname               string     `json:"hostname"`
	CijoeWorkflowRef       string     `json:"cijoe_workflow_ref"`
	LastKnownGood          string     `json:"last_known_good"`
	DiscoveredAt           *time.Time `json:"discovered_at"`
	LastSeenAt             *time.Time `json:"last_seen_at"`
	LastSeenIP             string     `json:"last_seen_ip"`
	BootPolicy             string     `json:"boot_policy"`
	LastFlashedAt          *time.Time `json:"last_flashed_at"`
	LastWorkflowRunAt      *time.Time `json:"last_workflow_run_at"`
	LastWorkflowStatus     *string    `json:"last_workflow_status"`
	LastWorkflowOutputPath string     `json:"last_workflow_output_path"`
	CreatedAt              time.Time  `json:"created_at"`
	UpdatedAt              time.Time  `json:"updated_at"`
	// NextBoot is what the next PXE contact of a flash-policy machine
	// gets: NextFlash or NextLocal.
	NextBoot string `json:"next_boot"`
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
	// LastServed is the boot policy the last PXE contact was served
	// (local, flash, tui; "" before the first contact).
	LastServed string `json:"last_served"`
}

// MaxSeedBytes caps user_data and meta_data each: they live in the
// state database and are sent on every flash.
const MaxSeedBytes = 1 << 20

// Redacted is m without its cloud-init seed, for answers on open routes.
func (m Machine) Redacted() Machine {
	m.UserData, m.MetaData = "", ""
	return m
}

// InFlashCycle reports whether the machine's last PXE contact was served
// the flash live env and no done has come since: the window in which the
// live env may fetch the machine's seed.
func InFlashCycle(m Machine) bool {
	if m.LastServed != PolicyFlash || m.LastSeenAt == nil {
		return false
	}
	return m.LastFlashedAt == nil || m.LastFlashedAt.Before(*m.LastSeenAt)
}

// MaxFailureLen caps a failure reason; longer ones are cut.
const MaxFailureLen = 2000

// MachineUpdate is the settable part of a machine (PUT /machines/{mac});
// nil fields are left as they are (on create: defaults).
type MachineUpdate struct {
	Image            *string `json:"image"`
	ProvisioningMode *string `json:"provisioning_mode"`
	Hostname         *string `json:"hostname"`
	CijoeWorkflowRef *string `json:"cijoe_workflow_ref"`
	LastKnownGood    *string `json:"last_known_good"`
	BootPolicy       *string `json:"boot_policy"`
	UserData         *string `json:"user_data"`
	MetaData         *string `json:"meta_data"`
}

// Contact is the outcome of one PXE contact.
type Contact struct {
	Machine Machine
	// Serve is the boot policy to render for this contact: PolicyLocal,
	// PolicyFlash or PolicyTUI (a flash machine due to boot its disk
	// once gets PolicyLocal).
	Serve string
	// Discovered is set when this contact created the record.
	Discovered bool
}

// Serves is the boot policy the machine's next PXE contact will be
// served, without recording anything: its boot policy, except that a
// flash machine due to boot its disk once gets PolicyLocal.
func Serves(m Machine) string {
	if m.BootPolicy == PolicyFlash && m.NextBoot == NextLocal {
		return PolicyLocal
	}
	return m.BootPolicy
}

// Store is bty-web's state. Every method is safe for concurrent use;
// every write is one transaction, durable when the method returns.
type Store interface {
	// ListMachines returns every machine, by MAC (an empty slice, never
	// nil, when there are none).
	ListMachines(ctx context.Context) ([]Machine, error)
	// GetMachine returns ErrNotFound for an unknown MAC.
	GetMachine(ctx context.Context, mac string) (Machine, error)
	// PutMachine creates (boot_policy default local) or updates a
	// machine; created says which.
	PutMachine(ctx context.Context, mac string, u MachineUpdate, now time.Time) (m Machine, created bool, err error)
	// DeleteMachine returns ErrNotFound for an unknown MAC.
	DeleteMachine(ctx context.Context, mac string) error
	// PXEContact records a PXE contact from ip: an unknown MAC is
	// inserted with boot_policy tui and discovered_at; last_seen_* are
	// updated; for a flash machine the per-job cadence decides Serve
	// and advances NextBoot (NextLocal -> serve local, then NextFlash).
	PXEContact(ctx context.Context, mac, ip string, now time.Time) (Contact, error)
	// FlashDone records a done signal: last_flashed_at = now and
	// NextBoot = NextLocal; the boot policy never changes. ErrNotFound
	// for an unknown MAC.
	FlashDone(ctx context.Context, mac string, now time.Time) (Machine, error)
	// FlashFailed records a failure report: last_failed_at = now and
	// last_failure = reason (cut to MaxFailureLen); the boot policy and
	// next_boot are left as they are, so a flash machine retries.
	// ErrNotFound for an unknown MAC.
	FlashFailed(ctx context.Context, mac, reason string, now time.Time) (Machine, error)

	// CreateSession stores a session token's SHA-256 with its expiry.
	CreateSession(ctx context.Context, tokenHash []byte, expires, now time.Time) error
	// SessionValid reports whether a token hash is stored and unexpired.
	SessionValid(ctx context.Context, tokenHash []byte, now time.Time) (bool, error)
	// RevokeSession deletes one session; RevokeAllSessions every one.
	RevokeSession(ctx context.Context, tokenHash []byte) error
	RevokeAllSessions(ctx context.Context) (int, error)

	// Setting returns ErrNotFound when unset; SetSetting stores one
	// (the admin password hash, proxy-DHCP interface and subnet).
	Setting(ctx context.Context, key string) (string, error)
	SetSetting(ctx context.Context, key, value string, now time.Time) error

	// ImageHash returns a cached sha256 for an image file of this size
	// and modification time (ErrNotFound when not cached or stale);
	// SetImageHash caches one.
	ImageHash(ctx context.Context, name string, size int64, mtime time.Time) (string, error)
	SetImageHash(ctx context.Context, name string, size int64, mtime time.Time, sha256 string) error

	// ImportMachines writes whole records (every field, timestamps
	// included) in one transaction, replacing records with the same
	// MAC: restoring an export. Every record is validated first.
	ImportMachines(ctx context.Context, ms []Machine) error

	// Ping checks the database answers (GET /healthz).
	Ping(ctx context.Context) error
	Close() error
}
