//! Prints the configuration reference page from the option schema:
//! `cargo run -q -p switchyard-core --example options-reference > docs/configuration.md`.

fn main() {
    print!("{}", switchyard_core::schema::reference_page());
}
