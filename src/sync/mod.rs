//! Background synchronisation: ABS attack-list polling and traffic shipping.

pub mod abs;
