//! nydusd's two pieces of state (`nydusd-api.md` §3.2): the internal FSM, which moves
//! *before* its action runs and is never rolled back, and the reported state, which moves
//! only when the action succeeds. A failed takeover therefore leaves FSM `Ready` while
//! the daemon still reports `INIT`.

use nydusd_api::State;

use crate::nydusd_error::NydusdError;

/// The internal state machine's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsm {
    /// Waiting for Mount or Takeover.
    Init,
    /// Mounted or taken over; waiting for Start.
    Ready,
    /// Serving.
    Running,
    /// Terminal; no event has a transition from here.
    Die,
}

/// Lifecycle inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Start-up mount.
    Mount,
    /// Restore from the supervisor.
    Takeover,
    /// Start serving.
    Start,
    /// Stop serving (and unmount from Ready).
    Stop,
    /// Leave without unmounting.
    Exit,
}

impl Event {
    /// The name nydusd puts into `UnexpectedEvent("...")`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mount => "Mount",
            Self::Takeover => "Takeover",
            Self::Start => "Start",
            Self::Stop => "Stop",
            Self::Exit => "Exit",
        }
    }
}

/// Why an event was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FireError {
    /// No transition for this event from the current FSM state (HTTP 400).
    Unexpected(Event),
    /// The FSM has terminated (HTTP 500, "sending on a closed channel").
    Closed,
    /// The transition was taken but its action failed.
    Action(NydusdError),
}

/// The FSM plus the reported state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    fsm: Option<Fsm>,
    reported: State,
}

impl Machine {
    /// A machine in INIT, as every nydusd begins.
    pub fn new() -> Self {
        Self { fsm: Some(Fsm::Init), reported: State::Init }
    }

    /// The state `GET /api/v1/daemon` reports.
    pub fn reported(&self) -> State {
        self.reported
    }

    /// The FSM state, `None` once terminated.
    #[cfg(test)]
    pub fn fsm(&self) -> Option<Fsm> {
        self.fsm
    }

    /// Applies `event`, running `action` after the FSM has moved.
    pub fn fire(&mut self, event: Event, action: impl FnOnce() -> Result<(), NydusdError>) -> Result<(), FireError> {
        let from = self.fsm.ok_or(FireError::Closed)?;
        let (to, reported_on_success) = match (from, event) {
            (Fsm::Init, Event::Mount) => (Fsm::Ready, None),
            (Fsm::Init, Event::Takeover) => (Fsm::Ready, Some(State::Ready)),
            (Fsm::Init, Event::Stop) => (Fsm::Die, Some(State::Stopped)),
            (Fsm::Ready, Event::Start) => (Fsm::Running, Some(State::Running)),
            (Fsm::Ready, Event::Stop) | (Fsm::Ready, Event::Exit) => (Fsm::Die, Some(State::Stopped)),
            (Fsm::Running, Event::Stop) => (Fsm::Ready, Some(State::Ready)),
            _ => return Err(FireError::Unexpected(event)),
        };
        // The FSM moves first and stays moved even if the action fails (rust-fsm's consume).
        self.fsm = Some(to);
        let outcome = action();
        if let (Ok(()), Some(state)) = (&outcome, reported_on_success) {
            self.reported = state;
        }
        // nydusd's state-machine thread exits after an event that leaves it STOPPED.
        if self.reported == State::Stopped {
            self.fsm = None;
        }
        outcome.map_err(FireError::Action)
    }

    /// Puts the machine where a daemon reporting `state` would be (scripted transitions).
    pub fn force(&mut self, state: State) {
        self.reported = state;
        self.fsm = match state {
            State::Init => Some(Fsm::Init),
            State::Ready => Some(Fsm::Ready),
            State::Running => Some(Fsm::Running),
            _ => None,
        };
    }

    /// The events `PUT /daemon/exit` sends, decided from the reported state.
    pub fn exit_events(&self) -> &'static [Event] {
        match self.reported {
            State::Stopped => &[],
            State::Init => &[Event::Stop],
            State::Running => &[Event::Stop, Event::Exit],
            _ => &[Event::Exit],
        }
    }

    /// The events SIGTERM/SIGINT send, decided from the reported state.
    pub fn stop_events(&self) -> &'static [Event] {
        match self.reported {
            State::Stopped => &[],
            State::Running => &[Event::Stop, Event::Stop],
            _ => &[Event::Stop],
        }
    }
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<(), NydusdError> {
        Ok(())
    }

    #[test]
    fn normal_start_is_mount_then_start() {
        let mut m = Machine::new();
        m.fire(Event::Mount, ok).unwrap();
        assert_eq!(m.reported(), State::Init);
        m.fire(Event::Start, ok).unwrap();
        assert_eq!(m.reported(), State::Running);
        assert_eq!(m.fire(Event::Start, ok), Err(FireError::Unexpected(Event::Start)));
    }

    #[test]
    fn failed_takeover_moves_the_fsm_but_not_the_reported_state() {
        let mut m = Machine::new();
        let err = m.fire(Event::Takeover, || Err(NydusdError::words("NoEnoughFds"))).unwrap_err();
        assert_eq!(err, FireError::Action(NydusdError::words("NoEnoughFds")));
        assert_eq!(m.reported(), State::Init);
        assert_eq!(m.fsm(), Some(Fsm::Ready));
        assert_eq!(m.fire(Event::Takeover, ok), Err(FireError::Unexpected(Event::Takeover)));
    }

    #[test]
    fn exit_from_running_goes_through_ready_and_closes_the_machine() {
        let mut m = Machine::new();
        m.fire(Event::Mount, ok).unwrap();
        m.fire(Event::Start, ok).unwrap();
        for e in m.exit_events() {
            m.fire(*e, ok).unwrap();
        }
        assert_eq!(m.reported(), State::Stopped);
        assert_eq!(m.fsm(), None);
        assert_eq!(m.fire(Event::Start, ok), Err(FireError::Closed));
        assert!(m.exit_events().is_empty());
    }

    #[test]
    fn forcing_a_state_lets_its_events_follow() {
        let mut m = Machine::new();
        m.force(State::Ready);
        m.fire(Event::Start, ok).unwrap();
        assert_eq!(m.reported(), State::Running);
        m.force(State::Stopped);
        assert_eq!(m.fire(Event::Start, ok), Err(FireError::Closed));
    }

    #[test]
    fn stop_from_init_stops_without_passing_ready() {
        let mut m = Machine::new();
        assert_eq!(m.stop_events(), &[Event::Stop]);
        m.fire(Event::Stop, ok).unwrap();
        assert_eq!(m.reported(), State::Stopped);
    }
}
