"""The review app's page (Vuetify 3 through trame): side panel of controls, the quad view grid on the right.

Layout only: every control reads and writes trame state or calls a controller of :mod:`.app`; element ids
(``case-STEM``, ``method-NAME``, ``save-button``...) are stable so the browser test can find them.
"""

from __future__ import annotations

PANEL_WIDTH = 360


def buildUi(server, views, title: str = "HybridAttentionSeg review"):
    """Build the page on ``server``; returns the layout."""
    from trame.ui.vuetify3 import SinglePageWithDrawerLayout
    from trame.widgets import html
    from trame.widgets import vuetify3 as v3

    ctrl = server.controller
    layout = SinglePageWithDrawerLayout(server, theme="dark")
    with layout:
        layout.title.set_text(title)
        layout.drawer.width = PANEL_WIDTH
        with layout.toolbar:
            v3.VSpacer()
            html.Span("{{ message }}", id="status-message",
                      classes=("message_type === 'error' ? 'text-red-lighten-2 mx-2' : 'text-grey-lighten-1 mx-2'",))
            v3.VProgressCircular(v_if="busy", indeterminate=True, size=18, width=2, classes="mx-2")
        with layout.drawer, html.Div(classes="pa-2", style="font-size: 13px"):
            _casePanel(v3, html, ctrl)
            _attentionPanel(v3, html)
            _segmentationPanel(v3, html)
            _correctionPanel(v3, html, ctrl)
            _reviewPanel(v3, html, ctrl)
            _savePanel(v3, html, ctrl)
        with layout.content, v3.VContainer(fluid=True, classes="pa-0 fill-height"):
            with html.Div(style="display: flex; width: 100%; height: calc(100vh - 64px);", id="view-grid"):
                views.initializeLayout(layout)
    return layout


def _header(html, text: str) -> None:
    html.Div(text, classes="text-subtitle-2 text-grey-lighten-1 mt-3 mb-1")


def _casePanel(v3, html, ctrl) -> None:
    _header(html, "Cases")
    with v3.VList(density="compact", nav=True, id="case-list"):
        with v3.VListItem(v_for="c in cases", key="c.id", id=("'case-' + c.id",),
                          active=("c.id === case_id",), disabled=("!!c.problem",),
                          click=(ctrl.open_case, "[c.id]")):
            v3.VListItemTitle("{{ c.id }}")
            v3.VListItemSubtitle("{{ c.problem || (c.model + ' · ' + c.methods.join(', ')"
                                 " + (c.reviewed ? ' · reviewed' : '')) }}")
    with html.Div(v_if="pending_input", classes="mt-1"):
        v3.VBtn("Segment {{ pending_input }}", id="segment-button", size="small", block=True,
                disabled=("busy",), click=ctrl.segment_input)


def _attentionPanel(v3, html) -> None:
    _header(html, "Attention map")
    with v3.VBtnToggle(v_model=("method", None), density="compact", divided=True, mandatory=False,
                       id="method-toggle", classes="flex-wrap", style="height: auto"):
        v3.VBtn("{{ m.id }}", v_for="m in methods", key="m.id", value=("m.id",), id=("'method-' + m.id",),
                size="small", color=("m.faithful === false ? 'orange' : 'primary'",))
    with html.Div(v_for="m in methods", key="m.id", v_show="m.id === method", id="faithfulness",
                  classes=("m.faithful === false ? 'text-orange mt-1' : 'text-grey-lighten-1 mt-1'",)):
        html.Span("Faithfulness: {{ m.label }}")
    v3.VSelect(label="Colour map", v_model=("color_map", "Inferno"), items=("color_maps", []),
               density="compact", hide_details=True, classes="mt-2")
    v3.VSlider(label="Threshold", v_model=("threshold", 0.2), min=0, max=1, step=0.05, hide_details=True,
               density="compact", thumb_label=True, id="threshold-slider")
    v3.VSlider(label="Opacity", v_model=("opacity", 0.5), min=0, max=1, step=0.05, hide_details=True,
               density="compact", thumb_label=True, id="opacity-slider")
    v3.VCheckbox(label="Legend in the views", v_model=("show_legend", True), density="compact",
                 hide_details=True)
    with html.Div(id="legend", v_show="method"):
        html.Div(style=("{background: legend_css, height: '12px', borderRadius: '2px'}",))
        with html.Div(style="display: flex; justify-content: space-between;", classes="text-caption"):
            html.Span("0.0")
            html.Span("{{ method }} ≥ {{ threshold }} shown")
            html.Span("1.0")


def _segmentationPanel(v3, html) -> None:
    _header(html, "Segmentation")
    v3.VSlider(label="Fill", v_model=("fill_opacity", 0.3), min=0, max=1, step=0.05, hide_details=True,
               density="compact", thumb_label=True)
    v3.VCheckbox(label="Outline", v_model=("outline", True), density="compact", hide_details=True)
    with html.Div(v_for="s in segments", key="s.id", classes="d-flex align-center"):
        v3.VCheckboxBtn(model_value=("s.visible",), id=("'segment-' + s.id",), density="compact",
                        update_modelValue="trame.trigger('segment_visible', [s.id, $event])")
        html.Span(style=("{background: s.color, width: '12px', height: '12px', display: 'inline-block', "
                         "marginRight: '6px'}",))
        html.Span("{{ s.name }}: {{ s.voxels }} voxels", classes="segment-voxels")


def _correctionPanel(v3, html, ctrl) -> None:
    _header(html, "Correct")
    v3.VSwitch(label="Click to correct", v_model=("click_mode", False), density="compact", hide_details=True,
               color="primary", id="click-mode")
    v3.VSelect(label="A click means", v_model=("click_label", "background"), items=("click_labels", []),
               density="compact", hide_details=True, id="click-label")
    with html.Div(classes="d-flex mt-1"):
        v3.VBtn("Undo", id="undo-button", size="small", disabled=("!can_undo",), click=ctrl.undo, classes="mr-1")
        v3.VBtn("Redo", id="redo-button", size="small", disabled=("!can_redo",), click=ctrl.redo)


def _reviewPanel(v3, html, ctrl) -> None:
    _header(html, "Uncertainty review queue")
    with html.Div(classes="d-flex"):
        v3.VBtn("Find regions", id="find-regions", size="small", click=ctrl.find_regions, classes="mr-1")
        v3.VBtn("Next region", id="next-region", size="small", click=ctrl.next_region)
    with v3.VList(density="compact", max_height=180, style="overflow-y: auto", id="region-list"):
        with v3.VListItem(v_for="(r, i) in regions", key="i", active=("i === region_row",),
                          click=(ctrl.go_region, "[i]")):
            v3.VListItemTitle("#{{ r.Rank }} {{ r.Segment }} · {{ r['Volume [mL]'] }} mL · "
                              "uncertainty {{ r['Mean uncertainty'] }}")


def _savePanel(v3, html, ctrl) -> None:
    _header(html, "Save")
    v3.VBtn("Save reviewed segmentation", id="save-button", size="small", block=True, color="primary",
            disabled=("!case_id",), click=ctrl.save)
    with v3.VDialog(v_model=("confirm_overwrite", False), max_width=420):
        with v3.VCard():
            v3.VCardTitle("Replace the saved review?")
            v3.VCardText("{{ overwrite_name }} exists. Replace it with the current segmentation?")
            with v3.VCardActions():
                v3.VSpacer()
                v3.VBtn("Cancel", id="overwrite-cancel", click="confirm_overwrite = false")
                v3.VBtn("Replace", id="overwrite-confirm", color="red", click=(ctrl.save, "[true]"))
