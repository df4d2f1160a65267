# photo_bedlam_pncc-512.py with captions from a local image-to-text model (a BLIP / GIT captioning checkpoint saved
# with save_pretrained, model and processor in one folder): the model's caption follows the template's.
# python tools/generate.py configs/control/pairs/photo_bedlam_pncc-512_captioner.py --cfg-options
#   captioner_dir=/models/blip-image-captioning-base bedlam_label_root=... bedlam_img_root=... body_model_dir=...
_base_ = ['./photo_bedlam_pncc-512.py']

captioner_dir = 'models/captioner'
out_dir = 'data/pairs/photo_bedlam_pncc-512_captioner'

generator = dict(
    # Stages run after the backend, in the main process, where the photo crop exists (device: 'cuda' if any).
    stages=[dict(type='CaptionImage', model_path=captioner_dir, text='a photo of', combine='append',
                 max_new_tokens=30, device='cpu')])
