package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/power"
	"github.com/btyproject/bty/internal/store"
)

// powerConfig is the power.Config of a machine's power settings, its
// password opened (stored sealed: secretBox).
func (s *Server) powerConfig(p *fleet.Power) (power.Config, error) {
	if p == nil {
		return power.Config{Driver: power.DriverNone}, nil
	}
	pw, err := s.secrets.open(p.Password)
	return power.Config{Driver: p.Driver, Address: p.Address, Username: p.Username, Password: pw,
		CipherSuite: p.CipherSuite, System: p.System, Insecure: p.Insecure}, err
}

// newPowerDriver is the driver of a machine's power settings.
func (s *Server) newPowerDriver(p *fleet.Power) (power.Driver, error) {
	c, err := s.powerConfig(p)
	if err != nil {
		return nil, err
	}
	return power.New(c, power.WithLogger(s.log))
}

// sealPassword is u with its password sealed (a copy: u is left as it
// is), for the store.
func (s *Server) sealPassword(u *fleet.PowerUpdate) (*fleet.PowerUpdate, error) {
	if u == nil || u.Password == nil || *u.Password == "" {
		return u, nil
	}
	pw, err := s.secrets.seal(*u.Password)
	if err != nil {
		return nil, err
	}
	c := *u
	c.Password = &pw
	return &c, nil
}

// SealPasswords seals the BMC passwords stored before bty-web sealed
// them; bty-web serve calls it at start.
func (s *Server) SealPasswords(ctx context.Context) error {
	ms, err := s.store.ListMachines(ctx)
	if err != nil {
		return err
	}
	n := 0
	for _, m := range ms {
		if m.Power == nil || m.Power.Password == "" || sealed(m.Power.Password) {
			continue
		}
		_, err := s.store.ModifyMachine(ctx, m.MAC, func(m fleet.Machine, found bool) (fleet.Machine, error) {
			if !found || m.Power == nil || sealed(m.Power.Password) {
				return m, store.ErrUnchanged
			}
			pw, err := s.secrets.seal(m.Power.Password)
			if err != nil {
				return m, err
			}
			p := *m.Power
			p.Password = pw
			m.Power = &p
			return m, nil
		})
		if err != nil && !errors.Is(err, store.ErrUnchanged) {
			return fmt.Errorf("sealing the BMC password of %s: %w", m.MAC, err)
		}
		n++
	}
	if n > 0 {
		s.log.Info("sealed stored BMC passwords", "machines", n, "key", s.secrets.path)
	}
	return nil
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
	c, err := s.powerConfig(p)
	if err != nil {
		return []*fleet.ValidationError{{Field: "power.password", Msg: err.Error()}}, nil
	}
	var errs []*fleet.ValidationError
	for _, fe := range c.Validate() {
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
	action, valid := parseAction(req.Action)
	if !valid {
		writeError(w, http.StatusBadRequest, `action: want "on", "off", "cycle" or "status"`)
		return
	}
	m, ok := s.apiMachine(w, r, mac)
	if !ok {
		return
	}
	res, code, err := s.powerAction(r.Context(), m, action)
	if err != nil {
		writeError(w, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// powerAction runs action through m's BMC, counting and logging it. On
// failure it returns the HTTP status that fits (409: no usable power
// settings; 502: the BMC refused or failed; 504: it did not answer) and
// an error that says what happened and what to do, never the password.
func (s *Server) powerAction(ctx context.Context, m fleet.Machine, action power.Action) (api.PowerResult, int, error) {
	mac := m.MAC.String()
	if m.Power == nil {
		return api.PowerResult{}, http.StatusConflict, errors.New("machine " + mac + " has no power driver: set one with bty-ctl machines set " + mac +
			" --power-driver ipmi|redfish --power-address ... --power-user ... --power-password-stdin, or power it by other means")
	}
	d, err := s.newPowerDriver(m.Power)
	if err != nil {
		return api.PowerResult{}, http.StatusConflict, errors.New("machine " + mac + ": its power settings are not usable: " + err.Error())
	}
	ctx, cancel := context.WithTimeout(ctx, powerTimeout)
	defer cancel()
	release, err := s.bmcs.acquire(ctx, m.Power.Address)
	if err != nil {
		return api.PowerResult{}, http.StatusGatewayTimeout, errors.New("power " + string(action) + " for " + mac + ": the BMC at " + m.Power.Address + " was busy with another action for " + powerTimeout.String() + "; try again")
	}
	defer release()
	start := time.Now()
	st, err := d.Power(ctx, action)
	code := http.StatusOK
	switch {
	case err == nil:
	case errors.Is(err, power.ErrUnreachable):
		code = http.StatusGatewayTimeout
	default:
		code = http.StatusBadGateway
	}
	s.metrics.powerActions.WithLabelValues(m.Power.Driver, powerResult(err)).Inc()
	if err != nil {
		s.log.Warn("power action failed", "mac", mac, "action", action, "driver", m.Power.Driver, "address", m.Power.Address, "err", err)
		return api.PowerResult{}, code, errors.New("power " + string(action) + " for " + mac + " through its " + m.Power.Driver + " BMC at " + m.Power.Address + ": " + err.Error())
	}
	s.log.Info("power action", "mac", mac, "action", action, "driver", m.Power.Driver, "state", st, "took", time.Since(start).Round(time.Millisecond))
	return api.PowerResult{Action: string(action), State: string(st), Driver: m.Power.Driver}, http.StatusOK, nil
}

// parseAction is the power.Action named v, if it is one.
func parseAction(v string) (power.Action, bool) {
	for _, a := range power.Actions {
		if string(a) == v {
			return a, true
		}
	}
	return "", false
}

// uiMachinePowerConfirm asks before a power action that stops the
// machine (off, cycle).
func (s *Server) uiMachinePowerConfirm(w http.ResponseWriter, r *http.Request) {
	m, ok := s.uiLoadMachine(w, r)
	if !ok {
		return
	}
	action, ok := parseAction(r.URL.Query().Get("action"))
	if !ok || (action != power.Off && action != power.Cycle) {
		s.uiError(w, r, http.StatusBadRequest, "Bad request", "Only off and cycle are confirmed: choose an action on the machine's page.")
		return
	}
	mac := m.MAC.String()
	what := map[power.Action]string{power.Off: "Power off", power.Cycle: "Power cycle"}[action]
	d := confirmData{Question: what + " " + mac + " now?", Button: what, Action: "/ui/machines/" + mac + "/power", Back: "/ui/machines/" + mac,
		Fields:  map[string]string{"action": string(action), "confirmed": "yes"},
		Details: []string{"This is a hard power action through its BMC: whatever the machine is doing (a job, a flash) stops at once."}}
	s.render(w, r, http.StatusOK, "confirm", uiPage{Title: what, Nav: "machines", LoggedIn: true, Data: d})
}

// uiMachinePower runs a power action from the machine's page (off and
// cycle only once confirmed) and shows the outcome there.
func (s *Server) uiMachinePower(w http.ResponseWriter, r *http.Request) {
	m, ok := s.uiLoadMachine(w, r)
	if !ok || !parseForm(w, r) {
		return
	}
	mac := m.MAC.String()
	action, ok := parseAction(r.PostForm.Get("action"))
	if !ok {
		s.uiError(w, r, http.StatusBadRequest, "Bad request", "Unknown power action: choose one on the machine's page.")
		return
	}
	if (action == power.Off || action == power.Cycle) && r.PostForm.Get("confirmed") != "yes" {
		redirect(w, r, "/ui/machines/"+mac+"/power?action="+string(action))
		return
	}
	res, _, err := s.powerAction(r.Context(), m, action)
	if err != nil {
		s.setFlash(w, "Power "+string(action)+" failed: "+err.Error())
	} else {
		s.setFlash(w, "Power "+string(action)+": the BMC reports the machine "+res.State+".")
	}
	redirect(w, r, "/ui/machines/"+mac)
}
