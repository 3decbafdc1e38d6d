package store

import (
	"errors"
	"fmt"
	"strings"
)

// ValidationError is a value a caller sent that the store refuses: an
// unknown boot policy or provisioning mode, a malformed MAC. The HTTP
// layer answers it with 400 and Error() as the message.
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

// BootPolicies and ProvisioningModes are the accepted values, in the
// order error messages list them.
var (
	BootPolicies      = []string{PolicyLocal, PolicyFlash, PolicyTUI}
	ProvisioningModes = []string{"", "none", "cloud-init", "cijoe", "cijoe-online"}
)

func oneOf(field, v string, allowed []string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	q := make([]string, len(allowed))
	for i, a := range allowed {
		q[i] = fmt.Sprintf("%q", a)
	}
	return &ValidationError{Field: field, Msg: fmt.Sprintf("%q is not one of %s", v, strings.Join(q, ", "))}
}

// ValidateUpdate checks the enumerated fields of u.
func ValidateUpdate(u MachineUpdate) error {
	if u.BootPolicy != nil {
		if err := oneOf("boot_policy", *u.BootPolicy, BootPolicies); err != nil {
			return err
		}
	}
	if u.ProvisioningMode != nil {
		if err := oneOf("provisioning_mode", *u.ProvisioningMode, ProvisioningModes); err != nil {
			return err
		}
	}
	return nil
}
