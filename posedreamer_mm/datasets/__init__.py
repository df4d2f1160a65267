"""HMR datasets (generated, PoseDreamer labels, BEDLAM, COCO/MPII/UBody pseudo-GT) and their transforms."""
