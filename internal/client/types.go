package client

import (
	"encoding/json"
	"time"

	"github.com/btyproject/bty/internal/store"
)

// Machine and MachineUpdate are the store's types (the wire shape of
// docs/reference.md, "Machine"); the store package holds no database code, so the client links
// none.
type (
	Machine       = store.Machine
	MachineUpdate = store.MachineUpdate
)

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
