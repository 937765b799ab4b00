"""Which one-column net each two-column config is compared with: its counterpart with the same
recipe, so that the comparison changes only the architecture. For the full-size configs that is
the paper's one-GPU comparison net (the 2012 code's net 145-half: conv5 and the fc layers as wide
as both columns together) with the config's own recipe; the small and tiny configs' counterparts
follow the same rule at their scale."""
ONECOL_FOR = {"alexnet_paper": "configs/alexnet_onecol.yaml",
              "alexnet_2012code": "configs/alexnet_2012code_onecol.yaml",
              "alexnet_2012code_2010": "configs/alexnet_2012code_onecol_2010.yaml",
              "small_twocol": "configs/small_onecol.yaml", "tiny_twocol": "configs/tiny_onecol.yaml"}
