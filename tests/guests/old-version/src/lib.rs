//! A guest built against another version of the contract
//! (`sluice:stream@0.9.0`, one this host does not serve): `host` must refuse it and name the version.
wit_bindgen::generate!({
    inline: r#"
        package sluice:%stream@0.9.0;
        interface operator { flat-map: func(records: list<u8>) -> list<u8>; }
        interface job { describe: func() -> string; }
        world stream-job { export operator; export job; }
    "#,
    world: "stream-job",
});

struct Guest;

impl exports::sluice::stream::operator::Guest for Guest {
    fn flat_map(records: Vec<u8>) -> Vec<u8> {
        records
    }
}

impl exports::sluice::stream::job::Guest for Guest {
    fn describe() -> String {
        String::new()
    }
}

export!(Guest);
