"""Published numbers of the paper, compared with in results.md / results.json.

Conventions: Table 1 of the paper uses inter-pupil NME; COFW-68 is
conventionally reported with inter-ocular NME and failure at NME > 0.10.
"""

# Paper Table 1, row 'Ours': NME (%) with inter-pupil normalisation.
PAPER_300W_NME = {"common": 4.16, "challenging": 7.54, "full": 4.78}
# Paper Sec. 4.4 (COFW-68, all points): NME (%) and success rate (%).
PAPER_COFW = {"baseline": {"nme": 6.29, "success_rate": 94.67},
              "refined": {"nme": 5.78, "success_rate": 97.83}}
