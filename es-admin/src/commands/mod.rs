//! One module per subcommand.

pub(crate) mod dead_letters;
pub(crate) mod projections;
pub(crate) mod publishing;
pub(crate) mod rebuild;
pub(crate) mod stream;
pub(crate) mod tail;
pub(crate) mod unpark;
