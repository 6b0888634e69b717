from localcluster.hoststate import without_our_chains

SAVED = """*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ABC - [0:0]
:CNI-1234 - [0:0]
:DOCKER - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -s 198.18.0.0/24 -g CNI-1234
-A OUTPUT -j DOCKER
-A KUBE-SERVICES -d 198.19.0.1/32 -j KUBE-SVC-ABC
-A CNI-1234 -j ACCEPT
COMMIT
"""


def test_our_chains_and_the_rules_in_or_jumping_to_them_are_dropped() -> None:
    kept = without_our_chains(SAVED)

    assert "KUBE-" not in kept and "CNI-" not in kept


def test_other_chains_and_rules_stay_as_saved() -> None:
    kept = without_our_chains(SAVED).splitlines()

    assert kept == ["*nat", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":DOCKER - [0:0]",
                    "-A OUTPUT -j DOCKER", "COMMIT"]
