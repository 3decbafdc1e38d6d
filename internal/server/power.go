package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/power"
	"github.com/btyproject/bty/internal/store"
)

// powerConfig is the power.Config of a machine's power settings.
func powerConfig(p *fleet.Power) power.Config {
	if p == nil {
		return power.Config{Driver: power.DriverNone}
	}
	return power.Config{Driver: p.Driver, Address: p.Address, Username: p.Username, Password: p.Password,
		CipherSuite: p.CipherSuite, System: p.System, Insecure: p.Insecure}
}

// powerErrors checks the power settings u would give the machine mac
// (its stored ones with u's changes): each problem is a
// *fleet.ValidationError on "power.FIELD", with what to do.
func (s *Server) powerErrors(ctx context.Context, mac fleet.MAC, u *fleet.PowerUpdate) ([]*fleet.ValidationError, error) {
	if u == nil {
		return nil, nil
	}
	var cur *fleet.Power
	m, err := s.store.GetMachine(ctx, mac)
	switch {
	case err == nil:
		cur = m.Power
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	p := u.Apply(cur)
	if p == nil {
		return nil, nil
	}
	var errs []*fleet.ValidationError
	for _, fe := range powerConfig(p).Validate() {
		errs = append(errs, &fleet.ValidationError{Field: "power." + fe.Field, Msg: fe.Msg})
	}
	return errs, nil
}

// powerTimeout bounds one power action, its retries included.
const powerTimeout = time.Minute

// handlePower runs a power action on the machine's BMC and answers the
// state it observed (api.PowerResult). A machine without power settings
// is a 409 that says how to add them; a BMC that refuses the
// credentials or does not answer is a 502 or 504 that names it (never
// the password).
func (s *Server) handlePower(w http.ResponseWriter, r *http.Request) {
	mac, ok := pathMAC(w, r)
	if !ok {
		return
	}
	var req api.PowerRequest
	if !decodeJSON(w, r, &req, 4<<10) {
		return
	}
	action := power.Action(req.Action)
	valid := false
	for _, a := range power.Actions {
		valid = valid || a == action
	}
	if !valid {
		writeError(w, http.StatusBadRequest, `action: want "on", "off", "cycle" or "status"`)
		return
	}
	m, err := s.store.GetMachine(r.Context(), mac)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no machine "+mac.String())
		return
	}
	if err != nil {
		s.internalError(w, r, err)
		return
	}
	if m.Power == nil {
		writeError(w, http.StatusConflict, "machine "+mac.String()+" has no power driver: set one with bty-ctl machines set "+mac.String()+
			" --power-driver ipmi|redfish --power-address ... --power-user ... --power-password-stdin, or power it by other means")
		return
	}
	d, err := power.New(powerConfig(m.Power), power.WithLogger(s.log))
	if err != nil {
		writeError(w, http.StatusConflict, "machine "+mac.String()+": its power settings are not usable: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), powerTimeout)
	defer cancel()
	start := time.Now()
	st, err := d.Power(ctx, action)
	result := "ok"
	code := http.StatusOK
	switch {
	case err == nil:
	case errors.Is(err, power.ErrCredentials):
		result, code = "credentials", http.StatusBadGateway
	case errors.Is(err, power.ErrUnreachable):
		result, code = "unreachable", http.StatusGatewayTimeout
	default:
		result, code = "error", http.StatusBadGateway
	}
	s.metrics.powerActions.WithLabelValues(m.Power.Driver, result).Inc()
	if err != nil {
		s.log.Warn("power action failed", "mac", mac, "action", action, "driver", m.Power.Driver, "address", m.Power.Address, "err", err)
		writeError(w, code, "power "+string(action)+" for "+mac.String()+" through its "+m.Power.Driver+" BMC at "+m.Power.Address+": "+err.Error())
		return
	}
	s.log.Info("power action", "mac", mac, "action", action, "driver", m.Power.Driver, "state", st, "took", time.Since(start).Round(time.Millisecond))
	writeJSON(w, http.StatusOK, api.PowerResult{Action: string(action), State: string(st), Driver: m.Power.Driver})
}
