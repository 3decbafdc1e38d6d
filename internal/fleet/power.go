package fleet

import "encoding/json"

// Power is how bty-web reaches a machine's BMC (docs/reference.md,
// "Power control"). internal/power checks the fields and talks to the
// BMC; this is the record's copy.
//
// The password is write-only: it is never encoded (an answer, an event,
// an export carries password_set instead) and never logged.
type Power struct {
	// Driver is "ipmi" or "redfish" (a machine without a BMC has no
	// Power).
	Driver string `json:"driver"`
	// Address is the IPMI host[:port] or the Redfish base URL.
	Address  string `json:"address"`
	Username string `json:"username"`
	Password string `json:"-"`
	// CipherSuite is the IPMI lanplus cipher suite (0: the library's
	// choice).
	CipherSuite int `json:"cipher_suite"`
	// System picks the Redfish ComputerSystem when there are several.
	System string `json:"system"`
	// Insecure skips verifying the Redfish BMC's TLS certificate.
	Insecure bool `json:"insecure"`
	// PasswordSet says a password is stored: on the wire, in place of
	// the password (MarshalJSON sets it when there is a Password).
	PasswordSet bool `json:"password_set"`
}

// MarshalJSON encodes p with password_set in place of the password.
func (p Power) MarshalJSON() ([]byte, error) {
	type plain Power
	q := plain(p)
	q.PasswordSet = p.PasswordSet || p.Password != ""
	return json.Marshal(q)
}

// PowerUpdate is the settable part of Power (PUT /machines/{mac}'s
// "power"): nil fields are left as they are. Driver "none" removes the
// machine's power control altogether; an empty Password keeps the one
// stored (a form never shows it back).
type PowerUpdate struct {
	Driver      *string `json:"driver"`
	Address     *string `json:"address"`
	Username    *string `json:"username"`
	Password    *string `json:"password"`
	CipherSuite *int    `json:"cipher_suite"`
	System      *string `json:"system"`
	Insecure    *bool   `json:"insecure"`
}

// DriverNone is the driver of a machine without power control.
const DriverNone = "none"

// Apply is p (nil: none yet) with u's fields set; nil when the driver
// is (or becomes) "none".
func (u PowerUpdate) Apply(p *Power) *Power {
	var n Power
	if p != nil {
		n = *p
	}
	setField(&n.Driver, u.Driver)
	setField(&n.Address, u.Address)
	setField(&n.Username, u.Username)
	if u.Password != nil && *u.Password != "" {
		n.Password = *u.Password
	}
	setField(&n.System, u.System)
	setField(&n.CipherSuite, u.CipherSuite)
	setField(&n.Insecure, u.Insecure)
	if n.Driver == "" || n.Driver == DriverNone {
		return nil
	}
	return &n
}

// setField sets *dst to *src when src is given (an update's field).
func setField[T any](dst *T, src *T) {
	if src != nil {
		*dst = *src
	}
}
