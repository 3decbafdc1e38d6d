// Package api holds bty-web's wire types: the JSON bodies of every route
// of docs/reference.md ("bty-web", "Routes"), declared once and used by the
// server (internal/server) and its clients (internal/client, bty-ctl,
// the TUI, the live env).
//
// It imports only internal/fleet (the machine record, whose JSON is the
// Machine wire shape), so a client links no server, HTTP handler or
// database code.
package api

import (
	"time"

	"github.com/btyproject/bty/internal/fleet"
)

// Machine is a machine's record (GET /machines, GET/PUT /machines/{mac},
// the answer to the live env's reports); MachineUpdate is the body of
// PUT /machines/{mac}. Both are the domain's own types: their JSON is the
// wire shape.
type (
	Machine       = fleet.Machine
	MachineUpdate = fleet.MachineUpdate
	// Power is a machine's "power" (its BMC settings; the password is
	// never sent back, password_set says whether one is stored);
	// PowerUpdate is MachineUpdate's "power".
	Power       = fleet.Power
	PowerUpdate = fleet.PowerUpdate
	// Flash is one flash attempt; ReflashRequest the body of POST
	// /machines/{mac}/reflash; Progress the live env's progress and
	// done reports.
	Flash          = fleet.Flash
	ReflashRequest = fleet.ReflashRequest
	Progress       = fleet.Progress
	// Workflow is a workflow file bty-web keeps (GET /workflows); Run
	// one workflow run (GET /runs/{id}); KnownGood a machine's
	// last_known_good baseline and DriftItem one way its record no
	// longer matches it (the machine's "drift").
	Workflow  = fleet.Workflow
	Run       = fleet.Run
	KnownGood = fleet.KnownGood
	DriftItem = fleet.DriftItem
	// Inventory is the hardware the live env reports (POST
	// /pxe/{mac}/inventory) and a machine's "inventory"; NIC,
	// InventoryDisk and PCIDevice its entries.
	Inventory     = fleet.Inventory
	NIC           = fleet.NIC
	InventoryDisk = fleet.InventoryDisk
	PCIDevice     = fleet.PCIDevice
)

// RunPage is GET /machines/{mac}/runs: newest first.
type RunPage struct {
	Runs  []fleet.Run `json:"runs"`
	Total int         `json:"total"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// ReportStatus answers a live env's report (POST /pxe/{mac}/done,
// /failed) that was recorded: the route is open, so it carries the
// status only ("recorded"), never the record.
type ReportStatus struct {
	Status string `json:"status"`
}

// PowerRequest is the body of POST /machines/{mac}/power.
type PowerRequest struct {
	Action string `json:"action"`
}

// PowerResult answers a power action: what was done, through which
// driver, and the power state the BMC reported right after.
type PowerResult struct {
	Action string `json:"action"`
	State  string `json:"state"`
	Driver string `json:"driver"`
}

// ReflashResult answers POST /machines/{mac}/reflash (202): the flash
// started, and how the machine will be booted into it: Power is
// "pending" (the BMC is being asked; the flash's power field and phase
// follow) or "none" (no power driver: Note says to reboot the machine
// by other means).
type ReflashResult struct {
	Flash fleet.Flash `json:"flash"`
	Power string      `json:"power"`
	Note  string      `json:"note,omitempty"`
}

// ActionPage is the answer of GET /machines/{mac}/actions.
type ActionPage struct {
	Actions []fleet.Action `json:"actions"`
	Total   int            `json:"total"`
}

// Action is one step of the automation on a machine (GET
// /machines/{mac}/actions).
type Action = fleet.Action

// FlashPage is GET /machines/{mac}/flashes: newest first.
type FlashPage struct {
	Flashes []fleet.Flash `json:"flashes"`
	Total   int           `json:"total"`
}

// MachineEvent is one change on GET /events/machines (server-sent
// events): an upsert carries the record, a delete only the MAC.
type MachineEvent struct {
	// Type is "upsert" or "delete".
	Type    string         `json:"type"`
	MAC     fleet.MAC      `json:"mac"`
	Machine *fleet.Machine `json:"machine,omitempty"`
}

// FailureReport is the JSON body of POST /pxe/{mac}/failed (plain text
// is accepted too) and of POST /machines/{mac}/report-failure.
type FailureReport struct {
	Reason string `json:"reason"`
}

// Image is one entry of the catalog (GET /images, and the answer to
// PUT /images/{name}).
type Image struct {
	Name             string    `json:"name"`
	Format           string    `json:"format"`
	SizeBytes        int64     `json:"size_bytes"`
	VirtualSizeBytes *int64    `json:"virtual_size_bytes"`
	ModifiedAt       time.Time `json:"modified_at"`
	// SHA256 is the file's hash, DecodedSHA256 the hash of what lands on
	// the disk; nil until the server has computed them.
	SHA256        *string `json:"sha256"`
	DecodedSHA256 *string `json:"decoded_sha256"`
	// Error says why the server cannot flash this file.
	Error string `json:"error,omitempty"`
	// Chunks is the image's chunk store (delta and parallel flashes),
	// built in the background once the image is hashed; nil until then.
	Chunks *ChunkStore `json:"chunks"`
}

// ChunkStore is the state of an image's chunk store (GET /images,
// served at GET /images/{name}/chunks once State is "ready").
type ChunkStore struct {
	// State is "queued", "building", "ready" or "failed".
	State string `json:"state"`
	// DoneBytes of TotalBytes (the decoded image) are chunked so far.
	DoneBytes  int64 `json:"done_bytes"`
	TotalBytes int64 `json:"total_bytes"`
	// SizeBytes is the store's file size (ready); ChunkSize its chunk
	// size; Chunks how many chunks the image has.
	SizeBytes int64 `json:"size_bytes,omitempty"`
	ChunkSize int64 `json:"chunk_size,omitempty"`
	Chunks    int64 `json:"chunks,omitempty"`
	// Error says why the build failed.
	Error string `json:"error,omitempty"`
}

// BootFile is one live-env artifact (GET /boot).
type BootFile struct {
	Name       string     `json:"name"`
	Present    bool       `json:"present"`
	Required   bool       `json:"required"`
	SizeBytes  int64      `json:"size_bytes"`
	ModifiedAt *time.Time `json:"modified_at"`
}

// BootUpload is the answer to PUT /boot/{name}.
type BootUpload struct {
	Name      string `json:"name"`
	SizeBytes int64  `json:"size_bytes"`
	SHA256    string `json:"sha256"`
}

// LoginRequest is the body of POST /auth/login.
type LoginRequest struct {
	Password string `json:"password"`
}

// Session is the answer to POST /auth/login: a session token and when
// it expires.
type Session struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Revoked is the answer to POST /auth/logout and /auth/revoke-all: how
// many sessions ended.
type Revoked struct {
	Revoked int `json:"revoked"`
}

// Settings is GET /settings: the proxy-DHCP setting, its state, and the
// server's network interfaces to choose from.
type Settings struct {
	ProxyDHCPIface  string `json:"proxydhcp_iface"`
	ProxyDHCPSubnet string `json:"proxydhcp_subnet"`
	// ProxyDHCPEnvOverride is BTY_PROXYDHCP_IFACE when set on the
	// server; the setting cannot be changed over the API then.
	ProxyDHCPEnvOverride string          `json:"proxydhcp_env_override"`
	ProxyDHCPStatus      ProxyDHCPStatus `json:"proxydhcp_status"`
	Interfaces           []Interface     `json:"interfaces"`
	TFTPPort             int             `json:"tftp_port"`
	// SSHPublicKey is bty-web's own key (OpenSSH authorized_keys line),
	// which cijoe-online runs log in with; Cijoe is the cijoe program
	// bty-web runs ("" when none is on its PATH: runs fail); MaxRuns
	// bounds the runs at once.
	SSHPublicKey string `json:"ssh_public_key"`
	Cijoe        string `json:"cijoe"`
	MaxRuns      int    `json:"max_runs"`
}

// ProxyDHCPStatus is the proxy-DHCP responder's state.
type ProxyDHCPStatus struct {
	Running      bool   `json:"running"`
	Interface    string `json:"interface"`
	ServerIP     string `json:"server_ip"`
	BootstrapURL string `json:"bootstrap_url"`
}

// Interface is one of the server's network interfaces.
type Interface struct {
	Name  string   `json:"name"`
	Addrs []string `json:"addrs"`
	Up    bool     `json:"up"`
}

// SettingsUpdate is PUT /settings; nil fields keep their value. An empty
// interface turns proxy-DHCP off.
type SettingsUpdate struct {
	ProxyDHCPIface  *string `json:"proxydhcp_iface,omitempty"`
	ProxyDHCPSubnet *string `json:"proxydhcp_subnet,omitempty"`
	// MaxRuns sets how many cijoe-online runs run at once (1-64).
	MaxRuns *int `json:"max_runs,omitempty"`
}

// Version is GET /version.
type Version struct {
	Version string `json:"version"`
	Program string `json:"program"`
}

// Health is GET /healthz.
type Health struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// StateArchive is GET /state/export and the body of POST /state/import.
type StateArchive struct {
	Format     string            `json:"format"`
	ExportedAt time.Time         `json:"exported_at"`
	Version    string            `json:"bty_version"`
	Machines   []fleet.Machine   `json:"machines"`
	Settings   map[string]string `json:"settings"`
	// Secrets is present only in an export asked to include them
	// (GET /state/export?secrets=1): the machines' BMC passwords, which
	// an import then restores.
	Secrets *ArchiveSecrets `json:"secrets,omitempty"`
}

// ArchiveSecrets are the secrets a StateArchive carries when asked to.
type ArchiveSecrets struct {
	// Warning says, in the archive itself, that it holds secrets.
	Warning string `json:"warning"`
	// BMCPasswords maps a machine's MAC to its BMC password.
	BMCPasswords map[string]string `json:"bmc_passwords"`
}

// Imported is the answer to POST /state/import.
type Imported struct {
	ImportedMachines int `json:"imported_machines"`
}

// BulkRequest is the body of POST /machines/bulk: one action on every
// machine a label selector picks (docs/reference.md, "Labels and
// selectors").
type BulkRequest struct {
	Selector string `json:"selector"`
	// Action is set, reflash, known-good, power or clear.
	Action string `json:"action"`
	// Update is what set changes (a MachineUpdate, without a host name).
	Update *fleet.MachineUpdate `json:"update,omitempty"`
	// Image is reflash's image (null: each record's own).
	Image *string `json:"image,omitempty"`
	// Power is power's action: on, off, cycle or status.
	Power string `json:"power,omitempty"`
}

// BulkResult is the answer of POST /machines/bulk: every selected
// machine's outcome, by MAC.
type BulkResult struct {
	Selector string     `json:"selector"`
	Action   string     `json:"action"`
	Matched  int        `json:"matched"`
	OK       int        `json:"ok"`
	Failed   int        `json:"failed"`
	Results  []BulkItem `json:"results"`
}

// BulkItem is one machine's outcome of a bulk action.
type BulkItem struct {
	MAC fleet.MAC `json:"mac"`
	// Error is why it was not done ("" done).
	Error string `json:"error,omitempty"`
	// FlashID is the flash a reflash started; State the power state a
	// power action saw; Note what else the machine's answer said.
	FlashID int64  `json:"flash_id,omitempty"`
	State   string `json:"state,omitempty"`
	Note    string `json:"note,omitempty"`
}

// Schedules (docs/reference.md, "Schedules"): a schedule with its
// latest occurrence, and the body that creates or changes one.
type (
	Schedule           = fleet.Schedule
	ScheduleOccurrence = fleet.Occurrence
	ScheduleMachine    = fleet.OccurrenceMachine
	ScheduleUpdate     = fleet.ScheduleUpdate
)

// Rollout is a rollout of an image to the machines a selector picks
// (GET /rollouts/{id}, the events of GET /rollouts/{id}/events);
// RolloutMachine one machine of it; RolloutRequest the body of POST
// /rollouts (docs/reference.md, "Rollouts").
type (
	Rollout        = fleet.Rollout
	RolloutMachine = fleet.RolloutMachine
	RolloutRequest = fleet.RolloutRequest
)
