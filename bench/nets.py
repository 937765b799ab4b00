"""Which one-column net each two-column config is compared with: the paper's one-GPU
comparison net for the full-size configs, and the counterpart of the same size for the small
and tiny ones."""
ONECOL_FOR = {"alexnet_paper": "configs/alexnet_onecol.yaml", "alexnet_2012code": "configs/alexnet_onecol.yaml",
              "small_twocol": "configs/small_onecol.yaml", "tiny_twocol": "configs/tiny_onecol.yaml"}
