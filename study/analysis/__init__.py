"""What a finished study says: paired statistics (:mod:`.stats`), the findings as data and their
verdicts (:mod:`.findings`), tables and figures (:mod:`.reports`) and the reproduction
(:mod:`.reproduce`). Reads result files and bank manifests; never trains. Imports
:mod:`study.teachers` and :mod:`study.train`."""
