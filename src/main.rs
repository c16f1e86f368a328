//! The factwal command line.

fn main() {
    println!("factwal: the command line comes with issue 5; see README.md");
}
