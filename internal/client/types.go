package client

import (
	"encoding/json"
	"time"
)

// Machine is a machine record, the wire shape of SPEC.md (times in RFC
// 3339, nil when unset).
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
	// gets: "flash" or "local" (the disk, once, after a done).
	NextBoot string `json:"next_boot"`
}

// MachineUpdate is the settable part of a machine (PUT /machines/{mac}):
// nil fields are left as they are (on create, the server's defaults);
// a pointer to "" clears a field.
type MachineUpdate struct {
	Image            *string `json:"image,omitempty"`
	ProvisioningMode *string `json:"provisioning_mode,omitempty"`
	Hostname         *string `json:"hostname,omitempty"`
	CijoeWorkflowRef *string `json:"cijoe_workflow_ref,omitempty"`
	LastKnownGood    *string `json:"last_known_good,omitempty"`
	BootPolicy       *string `json:"boot_policy,omitempty"`
}

// Image is one entry of the catalog (GET /images).
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

// Session is a login's token and expiry.
type Session struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Settings is GET /settings: the proxy-DHCP setting, its state, and the
// server's network interfaces to choose from.
type Settings struct {
	ProxyDHCPIface  string `json:"proxydhcp_iface"`
	ProxyDHCPSubnet string `json:"proxydhcp_subnet"`
	// ProxyDHCPEnvOverride is BTY_PROXYDHCP_IFACE when set on the
	// server; the setting cannot be changed over the API then.
	ProxyDHCPEnvOverride string           `json:"proxydhcp_env_override"`
	ProxyDHCPStatus      *ProxyDHCPStatus `json:"proxydhcp_status"`
	Interfaces           []Interface      `json:"interfaces"`
	TFTPPort             int              `json:"tftp_port"`
}

// ProxyDHCPStatus is the responder's state.
type ProxyDHCPStatus struct {
	Running      bool   `json:"running"`
	Interface    string `json:"interface"`
	ServerIP     string `json:"server_ip"`
	BootstrapURL string `json:"bootstrap_url"`
}

// UnmarshalJSON accepts the server's field names in either style: Go
// decodes keys case-insensitively, but not "ServerIP" into "server_ip".
func (s *ProxyDHCPStatus) UnmarshalJSON(b []byte) error {
	var v struct {
		Running       bool   `json:"running"`
		Interface     string `json:"interface"`
		ServerIP      string `json:"server_ip"`
		ServerIPGo    string `json:"ServerIP"`
		BootstrapURL  string `json:"bootstrap_url"`
		BootstrapURLG string `json:"BootstrapURL"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = ProxyDHCPStatus{Running: v.Running, Interface: v.Interface, ServerIP: v.ServerIP, BootstrapURL: v.BootstrapURL}
	if s.ServerIP == "" {
		s.ServerIP = v.ServerIPGo
	}
	if s.BootstrapURL == "" {
		s.BootstrapURL = v.BootstrapURLG
	}
	return nil
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
}

// ServerVersion is GET /version.
type ServerVersion struct {
	Version string `json:"version"`
	Program string `json:"program"`
}
