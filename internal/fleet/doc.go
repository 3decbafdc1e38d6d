// Package fleet is bty-web's domain: a machine's record and the rules
// that decide what it boots next (docs/reference.md, "Boot policies").
//
// It holds the one type for each value the rules work with (MAC,
// Policy, Mode, NextBoot), the machine record (Machine) and its settable
// part (MachineUpdate), and the cadence as pure functions of the record
// and the time: Decide says what the next PXE contact is served and
// why; Machine.Contact, Machine.Done, Machine.Failed and Machine.Apply
// return the record as a contact, a done, a failure report or an
// operator's change leave it. Storage (internal/store) reads and writes
// records and runs these rules inside one transaction; HTTP, the UI,
// bty-ctl and the live env only ask them.
//
// The package imports no storage, HTTP or CLI code.
package fleet
