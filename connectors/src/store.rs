//! Object store access: [`Location`] lives in `engine-api`, so the runtime's checkpoint store and
//! the sinks share it without the runtime depending on the connectors.

pub use engine_api::store::Location;
