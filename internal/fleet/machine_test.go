package fleet

import (
	"strings"
	"testing"
)

func TestValidateBounds(t *testing.T) {
	s := func(n int) *string { v := strings.Repeat("a", n); return &v }
	two := "a\nb"
	tests := []struct {
		name  string
		u     MachineUpdate
		field string // "" when u is good
	}{
		{"all at their bounds", MachineUpdate{Image: s(MaxNameBytes), Hostname: s(MaxHostnameBytes), CijoeWorkflowRef: s(MaxWorkflowRefBytes),
			UserData: s(MaxSeedBytes), MetaData: s(MaxSeedBytes)}, ""},
		{"image", MachineUpdate{Image: s(MaxNameBytes + 1)}, "image"},
		{"hostname", MachineUpdate{Hostname: s(MaxHostnameBytes + 1)}, "hostname"},
		{"cijoe_workflow_ref", MachineUpdate{CijoeWorkflowRef: s(MaxWorkflowRefBytes + 1)}, "cijoe_workflow_ref"},
		{"cijoe_workflow_ref of two lines", MachineUpdate{CijoeWorkflowRef: &two}, "cijoe_workflow_ref"},
		{"user_data", MachineUpdate{UserData: s(MaxSeedBytes + 1)}, "user_data"},
		{"meta_data", MachineUpdate{MetaData: s(MaxSeedBytes + 1)}, "meta_data"},
	}
	for _, tt := range tests {
		errs := tt.u.Validate()
		switch {
		case tt.field == "" && errs != nil:
			t.Errorf("%s: %v, want no error", tt.name, errs)
		case tt.field != "" && (len(errs) != 1 || errs[0].Field != tt.field || !strings.Contains(errs[0].Msg, "the limit is") && tt.u.CijoeWorkflowRef != &two):
			t.Errorf("%s: %v, want one error for %s naming the limit", tt.name, errs, tt.field)
		}
	}
}
