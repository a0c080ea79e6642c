//! A guest of the right package and version whose `operator` lacks
//! `flat-map-keyed`: `host` must refuse it and name what is missing.
wit_bindgen::generate!({
    inline: r#"
        package sluice:%stream@0.1.0;
        interface operator {
            open: func(params: list<tuple<string, string>>) -> result<_, string>;
        }
        interface job { describe: func() -> string; }
        world stream-job { export operator; export job; }
    "#,
    world: "stream-job",
});

struct Guest;

impl exports::sluice::stream::operator::Guest for Guest {
    fn open(_params: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }
}

impl exports::sluice::stream::job::Guest for Guest {
    fn describe() -> String {
        String::new()
    }
}

export!(Guest);
